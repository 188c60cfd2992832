"""The input check's recipe section (``input_check:`` of an ``mri-discs`` recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from spinedx.recipes import Strict, data_paths_from_env


class InputCheckConfig(Strict):
    """Recipe section of the input check (positives: sagittal spine MR folders; negatives: anything else)."""

    positives: list[Path] = Field(
        description="folders of sagittal spine MR slices ($SPINEDX_DATA/{spider-sagittal, mri-seg-small, "
        "spider-vertebra-masks} when left out)"
    )
    negatives: list[Path] = Field(
        description="folders of non-MR images, e.g. radiographs ($SPINEDX_DATA/xray-vertebrae-ap when left out)"
    )
    reorientations: list[Literal["rot90", "rot180", "rot270", "mirror_left_right", "mirror_up_down"]] = Field(
        default_factory=lambda: ["rot90", "rot180", "rot270"]
    )
    synthetic_mri_patients: int = Field(40, ge=0)
    synthetic_xray_images: int = Field(150, ge=0)
    procedural_images: int = Field(200, ge=0)
    max_per_folder: int | None = Field(None, ge=1, description="cap per source folder (tests)")
    image_size: int = Field(224, ge=32, description="side the slice is resized to for the ImageNet features")
    regularisation: float = Field(0.1, gt=0, description="inverse L2 strength C of the logistic regression")
    refuse_threshold: float = Field(0.9, gt=0, lt=1, description="P(other) at which analysis is skipped")
    folds: int = Field(5, ge=2)
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch threads")

    @model_validator(mode="before")
    @classmethod
    def _data_from_env(cls, values: Any) -> Any:
        return data_paths_from_env(
            values,
            {
                "positives": ["spider-sagittal", "mri-seg-small", "spider-vertebra-masks"],
                "negatives": ["xray-vertebrae-ap"],
            },
        )
