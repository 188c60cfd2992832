"""Train/validation/test splits grouped by study and stratified by class."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from spinedx.errors import InputError

SPLITS = ("train", "val", "test")


def _hold_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part of about ``fraction``, whole groups only, class-stratified."""
    n_folds = max(2, int(round(1.0 / fraction)))
    if len(np.unique(groups)) < n_folds:
        raise InputError(
            f"split: only {len(np.unique(groups))} studies, too few for a {fraction:.0%} grouped split"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def grouped_split(
    rows: pd.DataFrame, *, test_fraction: float, val_fraction: float, seed: int, group_by: str = "study_id"
) -> pd.Series:
    """A split name per row ('train' / 'val' / 'test'); rows of one group never straddle splits."""
    if group_by not in rows.columns:
        raise InputError(f"split.group_by: column '{group_by}' is not in the annotations")
    labels = rows["label"].to_numpy()
    groups = rows[group_by].astype(str).to_numpy()
    split = np.full(len(rows), "train", dtype=object)
    test = _hold_out(labels, groups, test_fraction, seed)
    split[test] = "test"
    if val_fraction > 0:
        rest = np.flatnonzero(~test)
        val = _hold_out(labels[rest], groups[rest], val_fraction / (1.0 - test_fraction), seed + 1)
        split[rest[val]] = "val"
    return pd.Series(split, index=rows.index, name="split")
