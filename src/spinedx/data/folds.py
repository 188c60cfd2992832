"""The one patient-fold assigner of every cross-validation: whole patients per fold.

``patient_folds`` wraps scikit-learn's ``GroupKFold`` (or ``StratifiedGroupKFold`` when the folds
should be balanced over ``strata``, e.g. a rare finding or the data source), shuffled by ``seed``.
Every row of one group (patient, or study) lands in one fold, so nothing of a held-out patient is
ever trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spinedx.errors import InputError


def patient_folds(groups: Sequence, n_folds: int, seed: int, strata: Sequence | None = None,
                  *, what: str = "cross-validation") -> np.ndarray:  # fmt: skip
    """Fold number (0..n_folds-1) per row; ``what`` names the run in the error when patients are too few."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = np.asarray([str(group) for group in groups])
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise InputError(f"{what}: {n_groups} patients, too few for {n_folds} folds")
    if strata is None:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(groups), -1, dtype=np.int64)
    labels = None if strata is None else np.asarray(strata)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups)):
        folds[held] = k
    return folds
