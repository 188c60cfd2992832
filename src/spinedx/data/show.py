"""Draw annotation boxes onto their images, for eyeballing a data set.

:func:`render_annotations` writes ``out_dir/<image_id>.png`` for each annotated image: every
box in its lesion type's colour, with "lesion (reader)" written above it, and a banner across
the top of images that a reader marked "No finding". Files are written atomically. An image
that is missing or cannot be decoded is skipped (listed in the result's ``skipped``) and the
run goes on; a run that draws nothing at all is an InputError. Image ids resolve inside the
image folder only (:func:`spinedx.io.annotations.resolve_image_path`).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from spinedx.errors import InputError
from spinedx.io.annotations import NO_FINDING, resolve_image_path
from spinedx.io.atomic import atomic_path
from spinedx.io.images import read_image
from spinedx.io.output_location import check_output_location

logger = logging.getLogger(__name__)

# Fixed colours for the VinDr-SpineXR lesion types; others get a stable colour from PALETTE.
LESION_COLOURS: dict[str, tuple[int, int, int]] = {
    "Osteophytes": (230, 25, 75),
    "Disc space narrowing": (60, 180, 75),
    "Surgical implant": (0, 130, 200),
    "Foraminal stenosis": (245, 130, 48),
    "Spondylolysthesis": (145, 30, 180),
    "Vertebral collapse": (70, 240, 240),
    "Other lesions": (240, 50, 230),
}
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 225, 25),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
)
BANNER_COLOUR = (40, 160, 40)


class Skipped(NamedTuple):
    """An image that was not drawn. ``str()`` gives the sentence to show the user."""

    image_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.image_id}: {self.reason}"


class RenderResult(list):
    """The written PNG paths (a ``list[Path]``), plus ``skipped``: :class:`Skipped` (image_id, reason) pairs."""

    def __init__(self, paths=(), skipped=None):
        super().__init__(paths)
        self.skipped: list[Skipped] = [Skipped(*item) for item in skipped or []]


def lesion_colour(lesion_type: str) -> tuple[int, int, int]:
    """The RGB colour used for ``lesion_type`` (stable across runs and images)."""
    if lesion_type in LESION_COLOURS:
        return LESION_COLOURS[lesion_type]
    return PALETTE[zlib.crc32(lesion_type.encode("utf-8")) % len(PALETTE)]


def render_annotations(
    annotations: pd.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    image_ids: list[str] | None = None,
    limit: int | None = None,
) -> RenderResult:
    """Render the boxes of ``annotations`` (internal table) onto the images in ``images_dir``.

    ``image_ids`` restricts (and orders) the images drawn; otherwise images come in the order
    of their first row. ``limit`` caps how many images are attempted. Returns the written
    paths; ``result.skipped`` lists (image_id, reason) for images that were not drawn.

    Raises InputError before drawing anything when ``out_dir`` cannot be written, and after
    trying every image when none could be drawn (the message gives the first reason).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    check_output_location(out_dir)
    listed = list(dict.fromkeys(str(i) for i in annotations["image_id"]))
    wanted = listed if image_ids is None else list(dict.fromkeys(str(i) for i in image_ids))
    if limit is not None:
        wanted = wanted[:limit]
    groups = {str(key): rows for key, rows in annotations.groupby("image_id", sort=False)}
    source = annotations.attrs.get("source")

    result = RenderResult()
    out_root = out_dir.resolve()
    for image_id in wanted:
        rows = groups.get(image_id)
        if rows is None:
            result.skipped.append(Skipped(image_id, "no annotations for this image"))
            continue
        try:
            path = resolve_image_path(images_dir, image_id, where=_row_name(source, rows.index[0]))
        except InputError as exc:
            result.skipped.append(Skipped(image_id, str(exc)))
            continue
        if path is None:
            result.skipped.append(Skipped(image_id, f"no image file under {images_dir}"))
            continue
        try:
            image = read_image(path)
            canvas = draw_annotations(image.pixels, rows)
            target = _output_path(out_root, image_id)
            with atomic_path(target) as tmp:
                canvas.save(tmp, format="PNG")
        except InputError as exc:
            result.skipped.append(Skipped(image_id, str(exc)))
            continue
        except OSError as exc:  # writing the PNG failed: name the output, not the input
            result.skipped.append(Skipped(image_id, f"cannot write {target}: {exc.strerror or exc}"))
            continue
        except Exception as exc:  # one bad image never stops the batch
            result.skipped.append(Skipped(image_id, f"{path}: {type(exc).__name__}: {exc}"))
            continue
        result.append(target)
    for item in result.skipped:
        logger.warning("skipped %s", item)
    if result.skipped and not result:
        first = result.skipped[0]
        raise InputError(
            f"{out_dir}: wrote no image; {len(result.skipped)} skipped, the first because {first}"
        )
    return result


def _row_name(source: str | None, row) -> str | None:
    """The CSV row that names an image, when the table came from a file."""
    return f"{source} row {row}" if source else None


def _output_path(out_root: Path, image_id: str) -> Path:
    target = (out_root / f"{image_id}.png").resolve()
    if not target.is_relative_to(out_root):  # an id like "../x" must not escape out_dir
        safe = image_id.replace("/", "_").replace("\\", "_").lstrip(".")
        target = out_root / f"{safe}.png"
    return target


def draw_annotations(pixels: np.ndarray, rows: pd.DataFrame) -> Image.Image:
    """An RGB picture of ``pixels`` (2-D, [0, 1]) with the boxes and labels of ``rows``."""
    grey = np.clip(np.nan_to_num(pixels) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    height, width = grey.shape
    short = min(height, width)
    line = max(1, round(short / 300))
    font = ImageFont.load_default(size=max(10, round(short / 40)))

    boxed = rows[
        (rows["lesion_type"] != NO_FINDING) & rows[["xmin", "ymin", "xmax", "ymax"]].notna().all(axis=1)
    ]
    for record in boxed.itertuples(index=False):
        colour = lesion_colour(str(record.lesion_type))
        x0, x1 = sorted((float(record.xmin), float(record.xmax)))
        y0, y1 = sorted((float(record.ymin), float(record.ymax)))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        reader = str(record.rad_id) if isinstance(record.rad_id, str) else ""
        label = f"{record.lesion_type} ({reader})" if reader else str(record.lesion_type)
        _label(draw, (x0, y0), label, colour, font, width)

    no_finding = rows[rows["lesion_type"] == NO_FINDING]
    if len(no_finding):
        readers = sorted({str(r) for r in no_finding["rad_id"] if isinstance(r, str) and r})
        text = NO_FINDING + (f" ({', '.join(readers)})" if readers else "")
        _banner(draw, text, font, width)
    return canvas


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _label(draw: ImageDraw.ImageDraw, corner: tuple[float, float], text: str, colour, font, width) -> None:
    x0, y0 = corner
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = right - left, bottom - top
    pad = max(1, text_h // 5)
    x = min(max(0.0, x0), max(0.0, width - text_w - 2 * pad))
    y = y0 - text_h - 2 * pad
    if y < 0:  # no room above: put the label just inside the top of the box
        y = max(0.0, y0)
    draw.rectangle((x, y, x + text_w + 2 * pad, y + text_h + 2 * pad), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=_text_colour(colour), font=font)


def _banner(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_h = bottom - top
    pad = max(2, text_h // 3)
    draw.rectangle((0, 0, width, text_h + 2 * pad), fill=BANNER_COLOUR)
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
