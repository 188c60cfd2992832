"""``spinedx evaluate RUN`` of a canal-stenosis run: its out-of-fold cross-validation figures.

Training scores every disc with the fold model that held its patient out (``RUN/cv/metrics.json``:
AUROC with 95% CIs over patients beside the level-only prior); those are the run's figures. The
bundled models, stenosis included, are scored on a lumbar515 folder by ``spinedx evaluate-discs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spinedx.errors import InputError


@dataclass
class StenosisEvaluation:
    metrics: dict
    metrics_path: Path
    report_path: Path | None = None
    """None: the cross-validation writes figures only."""


def evaluate_run(run_dir: Path, *, data: Path | None = None, images: Path | None = None,
                 out_dir: Path | None = None, n_resamples: int = 1000) -> StenosisEvaluation:  # fmt: skip
    """The out-of-fold figures of a finished canal-stenosis run (computed with the recipe's
    ``bootstrap_resamples``; ``out_dir`` and ``n_resamples`` do not apply)."""
    if data is not None or images is not None:
        raise InputError(
            "--data/--images: a canal-stenosis run is scored by its own patient cross-validation; "
            "score the bundled models on a lumbar515 folder with `spinedx evaluate-discs --data FOLDER`"
        )
    metrics_path = Path(run_dir) / "cv" / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(
            f"{metrics_path}: missing; the run's cross-validation has not finished (rerun the training)"
        )
    return StenosisEvaluation(json.loads(metrics_path.read_text()), metrics_path)
