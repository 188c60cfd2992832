"""Checkpoints written atomically, so a killed run resumes from its last finished epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path

LAST = "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(Path(path)) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        # Our checkpoints hold RNG states and plain Python values besides tensors.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(f"{path}: cannot read checkpoint ({exc.__class__.__name__})") from exc


def capture_rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def load_model_file(path: Path, file_format: str, kind: str) -> dict[str, Any]:
    """A model file whose ``format`` key is ``file_format``; else "not <kind> file" (InputError)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != file_format:
        raise InputError(f"{path}: not {kind} file (expected format '{file_format}')")
    return state
