"""``spinedx train configs/spider_discs.yaml``: the disc localiser and the disc grader, each
cross-validated by patient, then trained on all data, and (when the recipe has one) the input
check; all registered as bundled weights with ``--bundle``."""

from __future__ import annotations

import json
from pathlib import Path

from spinedx.io.atomic import atomic_write_text
from spinedx.models.registry import bundle_model
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_grading.train import cross_validate_grader, train_grader
from spinedx.tasks.disc_localization.model import DiscLocalizer
from spinedx.tasks.disc_localization.train import cross_validate_localizer, train_localizer
from spinedx.tasks.input_check.model import InputCheck
from spinedx.tasks.input_check.train import train_input_check
from spinedx.tasks.mri_discs.config import MriDiscsRecipe


def train_mri_discs(
    recipe: MriDiscsRecipe, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """Cross-validate and train both models into ``run_dir``; optionally register them as bundled weights."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # `spinedx evaluate RUN_DIR` reads the task and the data from it.
    atomic_write_text(run_dir / "recipe.json", json.dumps(recipe.model_dump(mode="json"), indent=2))
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
            bundle_model(name, path, recipe.version, Path(register_into), _COMPILE[name])
    return trained


_COMPILE = {
    "disc_localizer": lambda path: DiscLocalizer.load(path).compile(path),
    "disc_grader": lambda path: DiscGrader.load(path).compile(path),
    "input_check": lambda path: InputCheck.load(path).compile(path),
}
"""How each model file is compiled to its traced program when it is bundled."""
