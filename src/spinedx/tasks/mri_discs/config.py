"""The MRI disc recipe (``task: mri-discs``, e.g. configs/spider_discs.yaml): localiser, grader and input check."""

from __future__ import annotations

from typing import Literal

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


def parse_recipe(raw: dict, source: str) -> MriDiscsRecipe:
    return validate_recipe(MriDiscsRecipe, raw, source)
