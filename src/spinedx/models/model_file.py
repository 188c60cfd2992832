"""Model files: one ``torch.save`` dict per trained model, tagged with its format.

A model file holds plain values and tensors only (``format``, the settings that rebuild the network,
its state dict, calibration, provenance), so it is read with ``weights_only=True``: loading a model
never runs code from the file. Training checkpoints (optimizer and RNG states) are another thing,
kept by :mod:`spinedx.training.checkpoints`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path


def save_model_file(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (which must carry a ``format`` tag) atomically."""
    if "format" not in state:
        raise ValueError("a model file needs a 'format' tag")
    with atomic_path(Path(path)) as temporary:
        torch.save(state, temporary)
    return Path(path)


def read_weights_file(path: Path, kind: str) -> Any:
    """What ``torch.save`` wrote at ``path``, read with ``weights_only=True``; InputError when missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {kind} file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise InputError(f"{path}: cannot read {kind} file ({exc.__class__.__name__})") from exc


def read_model_file(path: Path, file_format: str, kind: str) -> dict[str, Any]:
    """The model file at ``path`` whose ``format`` is ``file_format``; else "not <kind> file" (InputError)."""
    state = read_weights_file(path, kind)
    if not isinstance(state, dict) or state.get("format") != file_format:
        raise InputError(f"{path}: not {kind} file (expected format '{file_format}')")
    return state
