"""Region-of-interest crops around annotated boxes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from spinedx.errors import InputError
from spinedx.io.boxes import format_box, validate_rows
from spinedx.io.images import read_image

if TYPE_CHECKING:  # pandas is for annotation tables only; analysis crops single boxes without it
    import pandas as pd


@dataclass
class CropSet:
    """Crops (N, size, size) uint8 with the annotation rows they came from (same order)."""

    crops: np.ndarray
    rows: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    """One line per image or row left out (missing or unreadable image, unusable box)."""
    warnings: list[str] = field(default_factory=list)
    """One sentence per box clipped to its image."""


def crop_box(
    pixels: np.ndarray, box: tuple[float, float, float, float], size: int, margin: float
) -> np.ndarray:
    """A square crop centred on ``box``, enlarged by ``margin`` of the box's longer side on each side.

    Squaring before resizing keeps the lesion's aspect ratio (the thesis stretched boxes to
    128x128); parts outside the image are zero-padded.  Returns (size, size) uint8.

    Memory and work are bounded by the image, not by the box: the square is assembled at one
    byte a pixel, and one with more pixels than ``max(4 x image pixels, size x size)`` (which
    no box inside the image reaches) is assembled at a reduced scale. Boxes should have been
    checked with :func:`spinedx.io.boxes.validate_box`; a non-finite box raises InputError.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    side = max(xmax - xmin, ymax - ymin, 1.0) * (1.0 + 2.0 * margin)
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax, side)):
        raise InputError(f"box {format_box(box)}: cannot crop a box with a non-finite coordinate or size")
    cx, cy = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_px = max(int(round(side)), 1)
    budget = max(4 * pixels.size, size * size)
    scale = 1.0 if side_px * side_px <= budget else math.isqrt(budget) / side_px
    canvas = _padded_square(pixels, left, top, side_px, scale)
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))


def _padded_square(pixels: np.ndarray, left: int, top: int, side: int, scale: float) -> np.ndarray:
    """The ``side`` x ``side`` square at (``left``, ``top``) of ``pixels`` as uint8, zero outside the
    image, drawn at ``scale`` (< 1: the image part is shrunk first, the square has fewer pixels)."""
    height, width = pixels.shape
    out_side = max(int(side * scale), 1)
    canvas = np.zeros((out_side, out_side), dtype=np.uint8)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + side, height), min(left + side, width)
    if src_bottom <= src_top or src_right <= src_left:
        return canvas
    region = pixels[src_top:src_bottom, src_left:src_right]
    dst_top, dst_left = src_top - top, src_left - left
    if scale < 1.0:
        out_w = int(round(region.shape[1] * scale))
        out_h = int(round(region.shape[0] * scale))
        if out_w < 1 or out_h < 1:  # the image covers less than one pixel of the crop
            return canvas
        image = Image.fromarray(np.ascontiguousarray(region, dtype=np.float32))
        region = np.asarray(image.resize((out_w, out_h), Image.Resampling.BILINEAR))
        dst_top, dst_left = int(round(dst_top * scale)), int(round(dst_left * scale))
    rows = min(region.shape[0], out_side - dst_top)
    cols = min(region.shape[1], out_side - dst_left)
    _to_uint8(region[:rows, :cols], canvas[dst_top : dst_top + rows, dst_left : dst_left + cols])
    return canvas


def _to_uint8(values: np.ndarray, out: np.ndarray, block_rows: int = 256) -> None:
    """``out[:] = round(clip(values * 255))`` for [0, 1] values, a block of rows at a time so the
    float temporaries stay small whatever the image size."""
    for start in range(0, values.shape[0], block_rows):
        block = values[start : start + block_rows] * np.float32(255.0)
        block += 0.5
        np.clip(block, 0, 255, out=block)
        out[start : start + block_rows] = block


def extract_crops(rows: pd.DataFrame, images_dir: Path, size: int, margin: float) -> CropSet:
    """Crop every boxed row; each image is read once. Nothing here stops the batch:

    a missing or unreadable image, or a box that is degenerate or entirely outside its image,
    is listed in ``skipped``; a box partly outside is clipped and listed in ``warnings``.
    Rows are named by their CSV row (the index) when ``rows.attrs["source"]`` holds the CSV path.
    """
    import pandas as pd

    from spinedx.io.annotations import resolve_image_path

    crops: list[np.ndarray] = []
    kept: list[pd.DataFrame] = []
    result = CropSet(np.zeros((0, size, size), dtype=np.uint8), rows.iloc[:0])
    source = rows.attrs.get("source")
    for image_id, group in rows.groupby("image_id", sort=False):
        try:
            path = resolve_image_path(images_dir, str(image_id), where=_row_name(source, group.index[0]))
        except InputError as exc:
            result.skipped.append(str(exc))
            continue
        if path is None:
            result.skipped.append(f"{images_dir}/{image_id}: image file not found")
            continue
        try:
            pixels = read_image(path).pixels
        except InputError as exc:
            result.skipped.append(str(exc))
            continue
        height, width = pixels.shape
        checked = validate_rows(group, width, height, lambda index, path=path: _row_name(source, index, path))
        result.skipped.extend(checked.errors)
        result.warnings.extend(checked.warnings)
        for row in checked.rows.itertuples(index=False):
            crops.append(crop_box(pixels, (row.xmin, row.ymin, row.xmax, row.ymax), size, margin))
        kept.append(checked.rows)
    if crops:
        result.crops = np.stack(crops)
        result.rows = pd.concat(kept).reset_index(drop=True)
    return result


def _row_name(source: str | None, index, image: Path | None = None) -> str:
    """How a message names an annotation row: its CSV row when known."""
    if source:
        return f"{source} row {index}"
    return f"{image}: annotation {index}" if image is not None else f"annotation {index}"
