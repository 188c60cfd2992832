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
        for name in ("herniation", "bulging", "narrowing")
        if getattr(grades, name).probability >= ALERT_PROBABILITY
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
