"""The cross-validation runner: fold_k/{model file, fold.json}, finished folds skipped, changed folds retrained."""

import json

import numpy as np
import pytest

from spinedx.data.folds import patient_folds
from spinedx.training.cross_validation import cross_validate

PATIENTS = ["10", "2", "2", "3", "3", "4", "5", "5", "6", "1"]
ROWS = [f"image{i}" for i in range(len(PATIENTS))]


def run(cv_dir, trained: list[int], identity=None, only=None, rows=ROWS):
    folds = patient_folds(PATIENTS, 3, seed=0)

    def train_fold(fold):
        trained.append(fold.index)
        (fold.dir / "model.pt").write_text(f"weights of fold {fold.index}")
        return {"train_seconds": 1.5}

    return folds, cross_validate(folds, PATIENTS, rows, cv_dir, train_fold, n_folds=3,
                                 identity=identity or {"recipe": "a"}, only=only)  # fmt: skip


def test_every_fold_writes_its_model_and_fold_json(tmp_path):
    trained: list[int] = []
    folds, runs = run(tmp_path / "cv", trained)
    assert trained == [0, 1, 2] and all(r.trained for r in runs)
    held_out = []
    for k, fold_run in enumerate(runs):
        info = json.loads((tmp_path / "cv" / f"fold_{k}" / "fold.json").read_text())
        assert (tmp_path / "cv" / f"fold_{k}" / "model.pt").is_file()
        assert info == fold_run.info
        assert info["fold"] == k and info["train_seconds"] == 1.5
        assert info["n_test"] == (folds == k).sum() and info["n_train"] == (folds != k).sum()
        assert info["test_patients"] == sorted({PATIENTS[i] for i in np.flatnonzero(folds == k)}, key=int)
        held_out += info["test_patients"]
    assert sorted(held_out, key=int) == sorted(set(PATIENTS), key=int)  # every patient tested once


def test_finished_folds_are_skipped_and_changed_ones_retrained(tmp_path):
    trained: list[int] = []
    run(tmp_path, trained)
    trained.clear()
    _, again = run(tmp_path, trained)
    assert trained == [] and not any(r.trained for r in again)
    (tmp_path / "fold_1" / "fold.json").unlink()  # killed before fold 1 finished
    run(tmp_path, trained)
    assert trained == [1]
    trained.clear()
    run(tmp_path, trained, identity={"recipe": "b"})
    assert trained == [0, 1, 2]
    trained.clear()
    run(tmp_path, trained, identity={"recipe": "b"}, rows=[*ROWS[:-1], "another image"])
    assert len(trained) == 3  # one image changed: it is in every fold's training or test rows


def test_only_some_folds(tmp_path):
    trained: list[int] = []
    _, runs = run(tmp_path, trained, only=[2])
    assert trained == [2] and [r.fold.index for r in runs] == [2]
    assert not (tmp_path / "fold_0").exists()


def test_too_few_patients_is_an_input_error():
    from spinedx.errors import InputError

    with pytest.raises(InputError, match="too few"):
        patient_folds(["1", "1", "2"], 3, seed=0)
