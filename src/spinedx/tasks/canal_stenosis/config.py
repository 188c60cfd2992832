"""The canal stenosis classifier's recipe (``task: canal-stenosis``, e.g. configs/canal_stenosis.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from spinedx.recipes import Recipe

TASK = "canal-stenosis"


class CanalStenosisRecipe(Recipe):
    """Recipe of the canal stenosis classifier (validated; unknown keys are errors)."""

    task: Literal["canal-stenosis"] = TASK
    name: str = "canal_stenosis"
    data_root: Path = Field(description="a lumbar515-sagittal folder (stenosis boxes behind discs)")
    series_limit: int | None = Field(None, ge=1, description="first N series (tests)")
    report_split: Path | None = Field(
        None,
        description="a split.json ({'<cohort>/<patient>': 'fit' | 'select' | 'report'}): its lumbar515 "
        "report patients are left out of training and CV, for `spinedx evaluate-discs --split`",
    )
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field("imagenet", description="'imagenet', 'none' or a weights file")
    crop_size: int = Field(64, ge=32, le=256, description="network input side, px")
    crop_scale: float = Field(1.3, gt=0.0, le=4.0, description="crop side / disc box width")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    folds: int = Field(5, ge=2)
    threads: int = Field(1, ge=1)
    bootstrap_resamples: int = Field(1000, ge=0)
