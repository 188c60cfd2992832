"""Recipes: YAML files validated by a pydantic schema, with ``--set section.key=value`` overrides.

Every task's recipe schema derives from :class:`Recipe` (the shared vocabulary: task, name, version,
seed, threads); :func:`read_recipe` reads the YAML and :func:`validate_recipe` turns the first
schema problem into one line naming the field. Which schema applies is the task registry's business
(:mod:`spinedx.tasks`), by the recipe's ``task`` key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spinedx.errors import InputError

RecipeT = TypeVar("RecipeT", bound=BaseModel)
RECIPE_FILES = ("recipe.json", "config.yaml")
"""Where a run folder records the recipe it was trained with (radiograph runs: ``config.yaml``)."""


class Strict(BaseModel):
    """A recipe section: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")


def _apply_override(raw: dict, override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise InputError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=3")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {override!r}: '{part}' is not a section")
    node[leaf] = yaml.safe_load(value)


def read_recipe(path: Path, overrides: list[str] | None = None) -> dict:
    """The YAML recipe at ``path`` as a dict, with ``section.key=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if raw is None:
        raise InputError(f"{path}: the recipe is empty")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    for override in overrides or []:
        _apply_override(raw, override)
    return raw


def validate_recipe(model: type[RecipeT], raw: dict, source: str = "config") -> RecipeT:
    """``raw`` validated as ``model``; the first problem becomes an InputError naming the field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InputError(f"{source}: field '{field}': {first['msg']}") from exc


def recipe_to_yaml(recipe: BaseModel) -> str:
    """The recipe with every value resolved, as saved into a run folder."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


class Recipe(Strict):
    """The top level every recipe shares; each task's schema narrows ``task`` to its own name."""

    task: str = Field(description="which task's schema applies (see `spinedx tasks`)")
    name: str = Field(description="run name: the default run folder is runs/<name>")
    version: str = Field("dev", description="version recorded in the trained model files")
    seed: int = Field(0, description="seed of every random choice (splits, initialisation, augmentation)")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("must be a non-empty name without '/'")
        return value


DATA_ENV = "SPINEDX_DATA"
"""Folder holding the data sets by name; recipe data paths left out are taken from under it."""


def data_paths_from_env(values: Any, defaults: dict[str, str | list[str]]) -> Any:
    """Recipe ``values`` with each missing data-path field of ``defaults`` (names of data sets, e.g.
    ``{"data_root": "spider-sagittal"}``) set under ``$SPINEDX_DATA``; without the variable they stay
    missing, and the schema reports them as required fields."""
    folder = os.environ.get(DATA_ENV)
    if not folder or not isinstance(values, dict):
        return values
    filled = dict(values)
    for field_name, names in defaults.items():
        if field_name not in filled:
            filled[field_name] = (
                [Path(folder) / n for n in names] if isinstance(names, list) else Path(folder) / names
            )
    return filled


def recorded_recipe(run_dir: Path) -> dict[str, Any]:
    """The recipe a training run recorded in ``run_dir`` (raw values, as written); ``{}`` when it
    records none, which makes it a run of the default recipe task (radiograph runs also keep their
    recipe inside ``best.pt``)."""
    for name in RECIPE_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            try:
                recipe = (
                    json.loads(path.read_text())
                    if path.suffix == ".json"
                    else yaml.safe_load(path.read_text())
                )
            except (ValueError, yaml.YAMLError) as exc:
                raise InputError(f"{path}: cannot read the run's recipe ({exc.__class__.__name__})") from None
            if not isinstance(recipe, dict):
                raise InputError(f"{path}: not a recipe (expected a mapping)")
            return recipe
    return {}
