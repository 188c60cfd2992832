"""``spinedx train configs/spider_discs.yaml``: the disc localiser and the disc grader, each
cross-validated by patient, then trained on all data, and (when the recipe has one) the input
check; all registered as bundled weights with ``--bundle``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from spinedx.models.registry import register_weights
from spinedx.training.config import validate_recipe
from spinedx.training.disc_grader import GraderConfig, cross_validate_grader, train_grader
from spinedx.training.disc_localizer import LocalizerConfig, cross_validate_localizer, train_localizer
from spinedx.training.input_check import InputCheckConfig, train_input_check

TASK = "mri-discs"


class MriDiscsRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = TASK
    name: str
    version: str
    localizer: LocalizerConfig = LocalizerConfig()
    grader: GraderConfig = GraderConfig()
    input_check: InputCheckConfig | None = None


def parse_recipe(raw: dict, source: str) -> MriDiscsRecipe:
    return validate_recipe(MriDiscsRecipe, raw, source)


def train_mri_discs(
    recipe: MriDiscsRecipe, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """Cross-validate and train both models into ``run_dir``; optionally register them as bundled weights."""
    run_dir = Path(run_dir)
    cross_validate_localizer(recipe.localizer, run_dir / "localizer_cv", train_final=False)
    train_localizer(recipe.localizer, run_dir / "localizer")
    localizer_path = run_dir / "localizer" / "disc_localizer.pt"
    cross_validate_grader(recipe.grader, run_dir / "grader_cv")
    grader_path = train_grader(
        recipe.grader, run_dir / "grader" / "disc_grader.pt", cv_dir=run_dir / "grader_cv"
    )
    trained = {"disc_localizer": localizer_path, "disc_grader": grader_path}
    if recipe.input_check is not None:
        trained["input_check"] = train_input_check(recipe.input_check, run_dir / "input_check")
    if register_into is not None:
        for name, path in trained.items():
            target = Path(register_into) / path.name
            target.write_bytes(path.read_bytes())
            register_weights(name, target, recipe.version, Path(register_into))
    return trained
