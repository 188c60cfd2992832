"""Disc localiser network: a small 2-D U-Net segmenting intervertebral discs on a sagittal slice.

The slice is normalised per image (:func:`normalize_intensity`, percentiles so that T1, T2 and
T2-SPACE look alike), resized with its aspect ratio kept and zero-padded to a square of
``INPUT_SIZE`` pixels (:func:`letterbox`). The network predicts :data:`N_CLASSES` channels:
background, the L5/S1 disc and any other disc. Its targets are filled ellipses inscribed in each
reference box shrunk by :data:`TARGET_SHRINK` (so neighbouring discs never touch); the pipeline
(:mod:`spinedx.pipelines.mri_discs.localize`) turns the predicted blobs back into boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinedx.models.unet import sagittal_unet

INPUT_SIZE = 256
"""Side of the square network input, pixels."""
N_CLASSES = 3
CLASS_NAMES = ("background", "L5/S1", "other disc")
BACKGROUND, L5S1, OTHER_DISC = 0, 1, 2
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
TARGET_SHRINK = (0.8, 0.6)
"""(width, height) fraction of a reference box covered by its target ellipse."""
PERCENTILES = (0.5, 99.5)


def build_disc_localizer(
    channels: Sequence[int] = DEFAULT_CHANNELS, num_res_units: int = 1, dropout: float = 0.0
) -> nn.Module:
    """The U-Net (MONAI ``UNet``, stride-2 levels): 1 input channel, :data:`N_CLASSES` logits."""
    return sagittal_unet(N_CLASSES, channels, num_res_units, dropout)


def normalize_intensity(pixels: np.ndarray) -> np.ndarray:
    """Stretch the 0.5-99.5 percentiles of the image to [0, 1] (clipped); float32."""
    values = np.asarray(pixels, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = np.percentile(values[finite], PERCENTILES)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    out = (np.where(finite, values, low) - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """Mapping between input pixels and the square network grid: ``net = input * scale + offset``.

    Coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``), x along columns, y along rows.
    """

    scale: float
    offset_x: float
    offset_y: float
    resized_w: int
    resized_h: int
    size: int

    def to_net(self, x: np.ndarray | float, y: np.ndarray | float):
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y

    def to_input(self, u: np.ndarray | float, v: np.ndarray | float):
        return (u - self.offset_x) / self.scale, (v - self.offset_y) / self.scale


def letterbox_geometry(height: int, width: int, size: int = INPUT_SIZE) -> Letterbox:
    scale = size / max(height, width)
    resized_h = max(1, min(size, round(height * scale)))
    resized_w = max(1, min(size, round(width * scale)))
    # The resize maps the whole image onto resized_w x resized_h pixels exactly.
    scale_x = resized_w / width
    scale_y = resized_h / height
    scale = 0.5 * (scale_x + scale_y)
    return Letterbox(
        scale=scale,
        offset_x=float((size - resized_w) // 2),
        offset_y=float((size - resized_h) // 2),
        resized_w=resized_w,
        resized_h=resized_h,
        size=size,
    )


def letterbox(pixels: np.ndarray, size: int = INPUT_SIZE) -> tuple[torch.Tensor, Letterbox]:
    """Normalise ``pixels`` (H, W), resize (antialiased) to fit ``size`` and zero-pad: (1, 1, size, size)."""
    image = normalize_intensity(pixels)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {image.shape}")
    geometry = letterbox_geometry(image.shape[0], image.shape[1], size)
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    resized = F.interpolate(
        tensor,
        size=(geometry.resized_h, geometry.resized_w),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    out = torch.zeros((1, 1, size, size), dtype=torch.float32)
    oy, ox = int(geometry.offset_y), int(geometry.offset_x)
    out[:, :, oy : oy + geometry.resized_h, ox : ox + geometry.resized_w] = resized.clamp(0.0, 1.0)
    return out, geometry


def render_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    geometry: Letterbox,
    shrink: tuple[float, float] = TARGET_SHRINK,
) -> np.ndarray:
    """Class map (size, size) int64: ellipses inscribed in the shrunk ``boxes`` (input pixels).

    ``labels`` are ``ivd_label`` values; label 1 (L5/S1) paints :data:`L5S1`, any other
    :data:`OTHER_DISC`.
    """
    size = geometry.size
    target = np.zeros((size, size), dtype=np.int64)
    centres = np.arange(size, dtype=np.float64) + 0.5
    for box, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, strict=True):
        x0, y0 = geometry.to_net(box[0], box[1])
        x1, y1 = geometry.to_net(box[2], box[3])
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        a = max(0.5 * (x1 - x0) * shrink[0], 0.75)
        b = max(0.5 * (y1 - y0) * shrink[1], 0.75)
        inside = ((centres[None, :] - cx) / a) ** 2 + ((centres[:, None] - cy) / b) ** 2 <= 1.0
        target[inside] = L5S1 if int(label) == 1 else OTHER_DISC
    return target
