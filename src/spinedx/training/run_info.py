"""Provenance saved into every run directory: git commit, package versions, command line, date."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata

import spinedx

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
