"""The spine segmenter's recipe (``task: spine-seg``, e.g. configs/spine_seg.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from spinedx.recipes import Recipe, validate_recipe

TASK = "spine-seg"


Loss = Literal["ce", "dice", "dice_ce"]


class SpineSegRecipe(Recipe):
    """Recipe of the spine segmenter (validated; unknown keys are errors)."""

    task: Literal["spine-seg"] = TASK
    name: str = "spine_seg"
    sources: list[Path] = Field(default_factory=list, description="real mask folders (seg_data kinds)")
    source_limit: int | None = Field(None, ge=1, description="first N images per source (tests)")
    synthetic_patients: int = Field(20, ge=0, description="synthetic training patients (t1 + t2 each)")
    synthetic_test_patients: int = Field(10, ge=0)
    synthetic_size: int = Field(256, ge=64, le=1024)
    image_size: int = Field(256, ge=32, le=1024, description="side of the square network input, px")
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = Field(2, ge=0)
    loss: Loss = "dice_ce"
    unlabelled_reach: float = Field(
        0.12,
        gt=0.0,
        le=1.0,
        description="how far from labelled vertebra/disc an unlabelled class may be (x input side)",
    )
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    rotation_deg: float = Field(10.0, ge=0.0, le=45.0)
    scale_range: tuple[float, float] = (0.85, 1.2)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_std: float = Field(0.03, ge=0.0)
    folds: int = Field(4, ge=2)
    threads: int = Field(1, ge=1)
    bootstrap_resamples: int = Field(1000, ge=0)


def parse_recipe(raw: dict, source: str) -> SpineSegRecipe:
    return validate_recipe(SpineSegRecipe, raw, source)
