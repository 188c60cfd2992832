"""Region-of-interest crops around annotated boxes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from spinedx.errors import InputError
from spinedx.io.annotations import resolve_image_path
from spinedx.io.images import read_image


@dataclass
class CropSet:
    """Crops (N, size, size) uint8 with the annotation rows they came from (same order)."""

    crops: np.ndarray
    rows: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


def crop_box(
    pixels: np.ndarray, box: tuple[float, float, float, float], size: int, margin: float
) -> np.ndarray:
    """A square crop centred on ``box``, enlarged by ``margin`` of the box's longer side on each side.

    Squaring before resizing keeps the lesion's aspect ratio (the thesis stretched boxes to
    128x128); parts outside the image are zero-padded.  Returns (size, size) uint8.
    """
    xmin, ymin, xmax, ymax = box
    side = max(xmax - xmin, ymax - ymin, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_px = max(int(round(side)), 1)
    height, width = pixels.shape
    canvas = np.zeros((side_px, side_px), dtype=np.float32)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + side_px, height), min(left + side_px, width)
    if src_bottom > src_top and src_right > src_left:
        canvas[src_top - top : src_bottom - top, src_left - left : src_right - left] = pixels[
            src_top:src_bottom, src_left:src_right
        ]
    image = Image.fromarray(np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def extract_crops(rows: pd.DataFrame, images_dir: Path, size: int, margin: float) -> CropSet:
    """Crop every boxed row; each image is read once. Unreadable or missing images are skipped, not fatal."""
    crops: list[np.ndarray] = []
    kept_index: list = []
    skipped: list[str] = []
    for image_id, group in rows.groupby("image_id", sort=False):
        path = resolve_image_path(images_dir, str(image_id))
        if path is None:
            skipped.append(f"{images_dir}/{image_id}: image file not found")
            continue
        try:
            pixels = read_image(path).pixels
        except InputError as exc:
            skipped.append(str(exc))
            continue
        for index, row in group.iterrows():
            crops.append(crop_box(pixels, (row.xmin, row.ymin, row.xmax, row.ymax), size, margin))
            kept_index.append(index)
    array = np.stack(crops) if crops else np.zeros((0, size, size), dtype=np.uint8)
    return CropSet(array, rows.loc[kept_index].reset_index(drop=True), skipped)
