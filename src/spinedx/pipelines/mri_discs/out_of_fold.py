"""The models of a cross-validated MRI disc run, chosen per patient so nobody is scored in-sample.

``spinedx train configs/spider_discs.yaml --out RUN`` leaves::

    RUN/localizer_cv/fold_k/{disc_localizer.pt, result.json}   # result.json lists test_patients
    RUN/grader_cv/fold_k/{disc_grader.pt, fold.json}           # fold.json lists test_patients
    RUN/localizer/disc_localizer.pt, RUN/grader/disc_grader.pt # final models, trained on all data

For a patient, :meth:`OutOfFoldModels.pipeline_for` combines the localiser fold and the grader fold
that held that patient out. A patient no fold held out (never in that stage's training data, e.g.
a series without reference boxes for the localiser) gets that stage's final model.
"""

from __future__ import annotations

import json
from pathlib import Path

import spinedx
from spinedx.errors import InputError
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_localization.model import DiscLocalizer

FINAL = "final"


def _held_out(cv_dir: Path, weights_name: str, info_name: str) -> tuple[dict[str, str], dict[str, Path]]:
    """Patient -> fold name, and fold name -> weights file, for every ``fold_k`` of ``cv_dir``."""
    fold_of: dict[str, str] = {}
    weights: dict[str, Path] = {}
    for fold_dir in sorted(cv_dir.glob("fold_*")):
        info_path, weights_path = fold_dir / info_name, fold_dir / weights_name
        if not (info_path.is_file() and weights_path.is_file()):
            raise InputError(f"{fold_dir}: missing {info_name} or {weights_name}; rerun the cross-validation")
        for patient in json.loads(info_path.read_text())["test_patients"]:
            fold_of[str(patient)] = fold_dir.name
        weights[fold_dir.name] = weights_path
    if not weights:
        raise InputError(f"{cv_dir}: no fold_k folders: not a cross-validation run")
    return fold_of, weights


class OutOfFoldModels:
    """Per-patient pipelines of a cross-validated run (loaded once per fold combination)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._localizer_fold, localizers = _held_out(
            self.run_dir / "localizer_cv", "disc_localizer.pt", "result.json"
        )
        self._grader_fold, graders = _held_out(self.run_dir / "grader_cv", "disc_grader.pt", "fold.json")
        localizers[FINAL] = self.run_dir / "localizer" / "disc_localizer.pt"
        graders[FINAL] = self.run_dir / "grader" / "disc_grader.pt"
        for path in (localizers[FINAL], graders[FINAL]):
            if not path.is_file():
                raise InputError(f"{path}: final model missing from the run folder")
        self._localizer_paths, self._grader_paths = localizers, graders
        self._localizers: dict[str, DiscLocalizer] = {}
        self._graders: dict[str, DiscGrader] = {}
        self.version = f"{spinedx.__version__}+cv.{self.run_dir.name}"

    def folds_of(self, patient: str) -> tuple[str, str]:
        """(localiser fold, grader fold) that held ``patient`` out, or ``"final"``."""
        return self._localizer_fold.get(patient, FINAL), self._grader_fold.get(patient, FINAL)

    def pipeline_for(self, patient: str) -> MriDiscPipeline:
        localizer_fold, grader_fold = self.folds_of(str(patient))
        if localizer_fold not in self._localizers:
            self._localizers[localizer_fold] = DiscLocalizer.load(self._localizer_paths[localizer_fold])
        if grader_fold not in self._graders:
            self._graders[grader_fold] = DiscGrader.load(self._grader_paths[grader_fold])
        return MriDiscPipeline(self._localizers[localizer_fold], self._graders[grader_fold], self.version)
