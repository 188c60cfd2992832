"""Slice → square network input for the 2-D U-Nets: percentile normalisation and letterboxing.

The disc localiser and the spine segmenter both see a slice normalised per image
(:func:`normalize_intensity`, percentiles so that T1, T2 and T2-SPACE look alike), resized with its
aspect ratio kept and zero-padded to a square (:func:`letterbox`); :class:`Letterbox` maps
coordinates between the two grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PERCENTILES = (0.5, 99.5)


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


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
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


def letterbox(pixels: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
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
