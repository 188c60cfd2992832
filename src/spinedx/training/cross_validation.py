"""The one cross-validation runner: one ``fold_k/`` folder per patient fold, finished folds skipped.

Every task's cross-validation has this layout (``CV_DIR`` is the task's: ``cv/``, ``grader_cv/``, …)::

    CV_DIR/fold_k/last.pt        the fold's EpochLoop checkpoint (a killed fold resumes after its last epoch)
    CV_DIR/fold_k/<model file>   the fold's deployable model, written by the task
    CV_DIR/fold_k/fold.json      {"fold", "test_patients", "n_train", "n_test", "identity", <task figures>}

The folds are given per row, as :func:`spinedx.data.folds.patient_folds` assigns them (every row of
a patient in one fold). ``fold.json`` is written last, once the task's fold function has returned,
so a ``fold.json`` with the same identity (the task's recipe identity plus the ids of the fold's
training and test rows) marks a finished fold and a rerun skips it. A fold whose ``fold.json`` has
another identity is trained again, and its EpochLoop then refuses the checkpoint of another recipe
or other data (a one-line error).

>>> runs = cross_validate(folds, patients, ids, out / "cv", train_fold, n_folds=5,
...                       identity={"recipe": recipe.model_dump(mode="json")})  # doctest: +SKIP
>>> [run.info["test_patients"] for run in runs]  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.io.atomic import atomic_write_text
from spinedx.training.loop import identity_digest

FOLD_INFO = "fold.json"


def natural_key(value: Any) -> tuple[int, int, str]:
    """Sort key putting numeric ids in numeric order ('2' before '10'), then the others."""
    text = str(value)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


@dataclass(frozen=True)
class Fold:
    index: int
    """k of ``fold_k``."""
    train: np.ndarray
    """Row indices the fold trains on."""
    test: np.ndarray
    """Row indices it holds out."""
    dir: Path
    test_patients: list[str]


@dataclass(frozen=True)
class FoldRun:
    fold: Fold
    info: dict[str, Any]
    """What ``fold.json`` holds."""
    trained: bool
    """False when the fold was finished before this call and skipped."""


def _folds(assigned: np.ndarray, patients: Sequence, cv_dir: Path, n_folds: int) -> list[Fold]:
    """The folds of ``assigned`` (fold number per row) with their folders under ``cv_dir``."""
    assigned = np.asarray(assigned)
    patients = np.asarray([str(patient) for patient in patients])
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero(assigned == k)
        folds.append(Fold(k, np.flatnonzero(assigned != k), test, Path(cv_dir) / f"fold_{k}",
                          sorted(set(patients[test].tolist()), key=natural_key)))  # fmt: skip
    return folds


def cross_validate(
    assigned: np.ndarray,
    patients: Sequence,
    rows: Sequence[str],
    cv_dir: Path,
    train_fold: Callable[[Fold], Mapping[str, Any]],
    *,
    n_folds: int,
    identity: Mapping[str, Any],
    only: Iterable[int] | None = None,
) -> list[FoldRun]:
    """Run ``train_fold`` for every fold not finished yet; returns every fold with its ``fold.json``.

    ``assigned``: fold number per row; ``patients``: patient per row; ``rows``: a stable id per row
    (image or disc), the data manifest of the folds' identity. ``train_fold(fold)`` trains in
    ``fold.dir`` (through :class:`~spinedx.training.loop.EpochLoop`, so a killed fold resumes), writes
    the fold's outputs and returns figures for ``fold.json``. ``only``: just these folds.
    """
    rows = [str(row) for row in rows]
    wanted = set(range(n_folds) if only is None else only)
    runs = []
    for fold in _folds(assigned, patients, cv_dir, n_folds):
        if fold.index not in wanted:
            continue
        digest = identity_digest(
            {**identity, "train": [rows[i] for i in fold.train], "test": [rows[i] for i in fold.test]}
        )
        path = fold.dir / FOLD_INFO
        info = json.loads(path.read_text()) if path.is_file() else {}
        if info.get("identity") == digest:
            runs.append(FoldRun(fold, info, trained=False))
            continue
        fold.dir.mkdir(parents=True, exist_ok=True)
        figures = dict(train_fold(fold))
        info = {"fold": fold.index, "test_patients": fold.test_patients, "n_train": len(fold.train),
                "n_test": len(fold.test), "identity": digest, **figures}  # fmt: skip
        atomic_write_text(path, json.dumps(info, indent=2) + "\n")
        runs.append(FoldRun(fold, info, trained=True))
    return runs
