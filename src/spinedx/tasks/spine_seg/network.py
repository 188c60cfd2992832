"""Spine segmentation network: a 2-D MONAI U-Net labelling vertebra, disc and spinal canal.

Input: one sagittal slice, normalised and letterboxed to ``input_size`` like the disc localiser
(:func:`spinedx.tasks.disc_localization.network.letterbox`). Output: :data:`N_CLASSES` logits in the order of
:data:`spinedx.io.masks.SEG_LABELS`. :func:`segment_pixels` maps the class probabilities back onto
the input's pixel grid before taking the arg-max, so the label map has the input's shape.

Weight files (:func:`save_segmenter` / :func:`load_segmenter`) hold a float16 state dict (half the
size; the U-Net is numerically insensitive to it) and the architecture settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinedx.data.letterbox import letterbox
from spinedx.errors import InputError
from spinedx.io.masks import SEG_LABELS
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.precision import full_precision, half_precision
from spinedx.models.program import load_program, trace_program
from spinedx.models.unet import sagittal_unet

N_CLASSES = len(SEG_LABELS)
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
DEFAULT_INPUT_SIZE = 256
FORMAT = "spinedx.spine_segmenter/1"
"""Format tag of spine segmenter model files."""


def build_spine_segmenter(channels: Sequence[int] = DEFAULT_CHANNELS, num_res_units: int = 2) -> nn.Module:
    """MONAI ``UNet`` (stride-2 levels): 1 input channel, :data:`N_CLASSES` logits."""
    return sagittal_unet(N_CLASSES, channels, num_res_units)


def segment_probabilities(model: nn.Module, pixels: np.ndarray, input_size: int) -> torch.Tensor:
    """(N_CLASSES, H, W) class probabilities on the grid of ``pixels`` (H, W)."""
    tensor, geometry = letterbox(pixels, input_size)
    with torch.inference_mode():
        probabilities = torch.softmax(model(tensor), dim=1)
    oy, ox = int(geometry.offset_y), int(geometry.offset_x)
    inside = probabilities[:, :, oy : oy + geometry.resized_h, ox : ox + geometry.resized_w]
    height, width = np.asarray(pixels).shape
    return F.interpolate(inside, size=(height, width), mode="bilinear", align_corners=False)[0]


def segment_pixels(model: nn.Module, pixels: np.ndarray, input_size: int) -> np.ndarray:
    """(H, W) uint8 label map of ``pixels``."""
    # numpy's arg-max over the class axis is ~8x faster here than torch's (a strided reduction).
    return segment_probabilities(model, pixels, input_size).numpy().argmax(0).astype(np.uint8)


def save_segmenter(path: Path, model: nn.Module, settings: dict, meta: dict | None = None) -> Path:
    """``settings``: ``channels``, ``num_res_units``, ``input_size``."""
    state = {"format": FORMAT, "state_dict": half_precision(model.state_dict()), "settings": settings,
             "labels": SEG_LABELS, "meta": meta or {}}  # fmt: skip
    return save_model_file(Path(path), state)


def load_segmenter(path: Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, settings) from a file written by :func:`save_segmenter` (or compiled by
    :func:`compile_segmenter`: then the model is the traced program)."""
    path = Path(path)
    payload = read_model_file(path, FORMAT, "a spine segmenter")
    try:
        settings = payload["settings"]
        if "program" in payload:
            return load_program(payload["program"]), settings
        model = build_spine_segmenter(settings["channels"], settings["num_res_units"])
        model.load_state_dict(full_precision(payload["state_dict"]))
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: damaged spine segmenter file ({exc.__class__.__name__}: {exc})") from exc
    return model.eval(), settings


def compile_segmenter(path: Path) -> Path:
    """Rewrite the segmenter file at ``path`` with its network as a traced program (no state dict)."""
    model, settings = load_segmenter(path)
    payload = read_model_file(path, FORMAT, "a spine segmenter")
    size = int(settings["input_size"])
    payload["program"] = trace_program(model, (torch.zeros(2, 1, size, size),))
    payload.pop("state_dict", None)
    return save_model_file(Path(path), payload)
