"""Provenance saved into every run directory: git commit, package versions, command line, date, recipe."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

import spinedx
from spinedx.errors import InputError

RECIPE_FILES = ("recipe.json", "config.yaml")
"""Where a run folder records the recipe it was trained with (radiograph runs: ``config.yaml``)."""

_PACKAGES = ("torch", "torchvision", "timm", "monai", "numpy", "scikit-learn", "pydicom")


def git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=spinedx.__path__[0]
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def run_info() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "spinedx_version": spinedx.__version__,
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


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
