"""The one patient-fold assigner of every cross-validation: whole patients per fold.

``patient_folds`` wraps scikit-learn's ``GroupKFold`` (or ``StratifiedGroupKFold`` when the folds
should be balanced over ``strata``, e.g. a rare finding or the data source), shuffled by ``seed``.
Every row of one group (patient, or study) lands in one fold, so nothing of a held-out patient is
ever trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

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


def report_patients(split_path: str | Path) -> set[str]:
    """The ``<cohort>/<patient>`` keys marked "report" in a fixed split file (``split.json``:
    ``{"<cohort>/<patient>": "fit" | "select" | "report"}``, as ``research/grader_research.py`` draws it):
    the patients kept for reporting only, out of every training and design choice."""
    path = Path(split_path)
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the split ({exc})") from None
    if not isinstance(split, dict) or not all(isinstance(part, str) for part in split.values()):
        raise InputError(f"{path}: expected an object {{'<cohort>/<patient>': 'fit' | 'select' | 'report'}}")
    return {str(key) for key, part in split.items() if part == "report"}


def report_only(dataset, split_path: str | Path, cohort: str, tables: tuple[str, ...]):
    """A copy of ``dataset`` (a dataclass of tables with a ``patient`` column, ``series`` among them)
    whose ``tables`` keep only ``cohort``'s report patients of ``split_path``."""
    report = report_patients(split_path)
    kept = {
        name: getattr(dataset, name)[
            [f"{cohort}/{patient}" in report for patient in getattr(dataset, name)["patient"].astype(str)]
        ]
        for name in tables
    }
    if kept["series"].empty:
        raise InputError(
            f"{split_path}: no report patient of this {cohort} folder ('{cohort}/<patient>' keys)"
        )
    return replace(dataset, **kept)
