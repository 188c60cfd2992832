"""Findings drawn on the analysed image: disc boxes, level names and the key grades."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinedx.io.findings import Disc

_ALERT = (230, 60, 60)
_NORMAL = (60, 200, 90)
ALERT_PROBABILITY = 0.5


def _disc_label(disc: Disc) -> tuple[str, bool]:
    grades = disc.grades
    flags = [
        f"{name} {getattr(grades, name).probability:.2f}"
        for name in ("herniation", "bulging", "narrowing", "stenosis")
        if getattr(grades, name) is not None and getattr(grades, name).probability >= ALERT_PROBABILITY
    ]
    text = f"{disc.level}  Pf {grades.pfirrmann.grade}" + (f"  {', '.join(flags)}" if flags else "")
    alert = grades.herniation.probability >= ALERT_PROBABILITY
    return text, alert


def render_overlay(pixels: np.ndarray, discs: list[Disc], scale: int = 2) -> Image.Image:
    """RGB image (upsampled by ``scale`` so labels stay legible on small slices)."""
    grey = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(grey).convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(11, 7 * scale))
    for disc in discs:
        text, alert = _disc_label(disc)
        colour = _ALERT if alert else _NORMAL
        xmin, ymin, xmax, ymax = (value * scale for value in disc.box)
        draw.rectangle((xmin, ymin, xmax, ymax), outline=colour, width=2)
        # Labels go right of the box (over the canal), or left of it where they would leave the image.
        text_width = draw.textlength(text, font=font)
        x = xmax + 4 if xmax + 4 + text_width <= image.width else max(0.0, xmin - 4 - text_width)
        left, top, right, bottom = draw.textbbox((x, ymin), text, font=font)
        draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
        draw.text((x, ymin), text, fill=colour, font=font)
    return image


# Anchors of a black-red-yellow-white ramp (like matplotlib's "hot"), so evidence reads as heat on
# greyscale MR without loading matplotlib during analysis.
_HEAT_ANCHORS = np.array([[0, 0, 0], [200, 30, 20], [255, 200, 40], [255, 255, 255]], dtype=np.float32)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """RGB float32 (..., 3) of ``values`` in [0, 1] along the heat ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    low = np.minimum(position.astype(int), len(_HEAT_ANCHORS) - 2)
    fraction = (position - low)[..., None]
    return _HEAT_ANCHORS[low] * (1.0 - fraction) + _HEAT_ANCHORS[low + 1] * fraction


def render_evidence(pixels: np.ndarray, heatmap: np.ndarray, box, scale: int = 3) -> Image.Image:
    """The region around ``box`` with its heatmap blended over the image (RGB, upsampled by ``scale``)."""
    height, width = pixels.shape
    xmin, ymin, xmax, ymax = box
    half = max(xmax - xmin, ymax - ymin) * 1.1
    cx, cy = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    left, top = max(int(cx - half), 0), max(int(cy - half), 0)
    right, bottom = min(int(cx + half) + 1, width), min(int(cy + half) + 1, height)
    grey = np.clip(pixels[top:bottom, left:right], 0.0, 1.0)[..., None] * 255.0
    heat = heatmap[top:bottom, left:right, None]
    blended = grey * (1.0 - 0.55 * heat) + heat_colours(heat[..., 0]) * 0.55 * heat
    image = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        ((xmin - left) * scale, (ymin - top) * scale, (xmax - left) * scale, (ymax - top) * scale),
        outline=_NORMAL,
        width=1,
    )
    return image
