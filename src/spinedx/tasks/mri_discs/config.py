"""The MRI disc recipe (``task: mri-discs``, e.g. configs/spider_discs.yaml): localiser, grader, input check
and the grader's canal fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from spinedx.recipes import Recipe, validate_recipe
from spinedx.tasks.disc_grading.config import GraderConfig
from spinedx.tasks.disc_localization.config import LocalizerConfig
from spinedx.tasks.input_check.config import InputCheckConfig

TASK = "mri-discs"


class MriDiscsRecipe(Recipe):
    """The localiser, the grader and optionally the input check, each cross-validated then trained on all data."""

    task: Literal["mri-discs"] = TASK
    localizer: LocalizerConfig
    grader: GraderConfig
    input_check: InputCheckConfig | None = None
    canal_fusion: Literal["bundled"] | Path | None = Field(
        None,
        description="a canal stenosis model file (or 'bundled') whose logit the grader's herniation takes "
        "as well, stacked on the grader CV's out-of-fold predictions; it must not have trained on the "
        "herniation-labelled discs (the bundled one trains on lumbar515, which has no herniation labels)",
    )


def parse_recipe(raw: dict, source: str) -> MriDiscsRecipe:
    return validate_recipe(MriDiscsRecipe, raw, source)
