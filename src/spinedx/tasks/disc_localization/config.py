"""The disc localiser's recipe section (``localizer:`` of an ``mri-discs`` recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from spinedx.recipes import Strict, data_paths_from_env


class LocalizerConfig(Strict):
    """Recipe of the disc localiser (training and cross-validation)."""

    data_root: Path = Field(
        description="spider-sagittal layout folder ($SPINEDX_DATA/spider-sagittal when left out)"
    )
    lumbar515_root: Path | None = Field(
        None,
        description="a lumbar515-sagittal folder to train on as well: its disc boxes, tight around the disc, "
        "are widened to SPIDER's convention (disc and endplates) by `lumbar515_box_scale`, and its series are "
        "scored by that cohort's rule (a reference disc is found when its centre lies inside a predicted box)",
    )
    lumbar515_box_scale: tuple[float, float] = Field(
        (1.10, 1.175),
        description="(width, height) factors from a lumbar515 disc box to SPIDER's convention, about its centre: "
        "the median ratios of the SPIDER-trained localiser's boxes to the 2,549 reference boxes they hold on "
        "the split's fit patients (research/localizer_both_cohorts.py)",
    )
    lumbar515_levels: bool = Field(
        False,
        description="train the L5/S1 class on lumbar515's levels too; they are derived by counting up from the "
        "lowest boxed disc and can be off by one, so by default its discs teach where discs are (either class) "
        "and only SPIDER's annotated levels teach which one is L5/S1",
    )
    report_split: Path | None = Field(
        None,
        description="a split.json ({'<cohort>/<patient>': 'fit' | 'select' | 'report'}): its report patients "
        "of either cohort are left out of training and CV, so `spinedx evaluate-discs --split` scores them end "
        "to end with a localiser that never saw them",
    )
    image_size: int = Field(256, ge=32, le=1024, description="side of the square network input, px")
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = Field(1, ge=0)
    epochs: int = Field(60, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    threads: int = Field(1, ge=1)
    folds: int = Field(5, ge=2)
    use_synthetic: bool = False
    synthetic_patients: int = Field(40, ge=1, description="synthetic patients (t1 + t2 each)")
    synthetic_root: Path | None = Field(
        None, description="a synthetic spider-layout folder; None generates one under out_dir"
    )
    rotation_deg: float = Field(10.0, ge=0.0, le=45.0)
    scale_range: tuple[float, float] = (0.85, 1.25)
    translate: float = Field(0.08, ge=0.0, lt=0.5, description="fraction of the input side")
    cut_probability: float = Field(
        0.2, ge=0.0, le=1.0, description="chance of blanking the image above or below a random row"
    )
    gamma_range: tuple[float, float] = (0.6, 1.6)
    noise_std: float = Field(0.03, ge=0.0)
    hflip_probability: float = Field(0.0, ge=0.0, le=1.0, description="left-right flips (never up-down)")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    bootstrap_resamples: int = Field(1000, ge=0)
    max_images: int | None = Field(
        None, ge=1, description="use only the first N boxed series of each cohort (tests)"
    )

    @model_validator(mode="before")
    @classmethod
    def _data_from_env(cls, values: Any) -> Any:
        return data_paths_from_env(values, {"data_root": "spider-sagittal"})
