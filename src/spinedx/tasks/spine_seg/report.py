"""Self-contained HTML report of a segmentation evaluation (``spinedx evaluate-seg`` and CV)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from spinedx.evaluation.segmentation import METRICS
from spinedx.io.atomic import atomic_write_text
from spinedx.report.html import load_template, png_base64

CLASS_COLOURS = {1: (240, 200, 40), 2: (60, 200, 90), 3: (70, 140, 255)}
"""vertebra yellow, disc green, canal blue (background transparent)."""


def _ci(entry: dict | None) -> str:
    if not entry or entry.get("estimate") is None:
        return "—"
    if entry.get("lower") is None:
        return f"{entry['estimate']:.3f}"
    return f"{entry['estimate']:.3f} ({entry['lower']:.3f}–{entry['upper']:.3f})"


def overlay_labels(pixels: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """RGB image with each labelled class tinted in its :data:`CLASS_COLOURS` colour."""
    grey = np.clip(pixels * 255.0, 0, 255).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value, colour in CLASS_COLOURS.items():
        inside = labels == value
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(rgb.astype(np.uint8))


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_base64(buffer.getvalue())


def _mean_dice(image: dict) -> float:
    values = [c["dice"] for c in image["classes"].values() if c["dice"] is not None]
    return float(np.mean(values)) if values else float("nan")


def _cases(metrics: dict, samples, predictions) -> list[dict]:
    """Best, median and worst image by mean Dice over its scored classes: reference | prediction."""
    order = sorted(range(len(samples)), key=lambda i: _mean_dice(metrics["images"][i]))
    if not order:
        return []
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    cases = []
    for name, i in picks.items():
        sample = samples[i]
        side_by_side = np.concatenate(
            [
                np.asarray(overlay_labels(sample.pixels, sample.labels)),
                np.asarray(overlay_labels(sample.pixels, predictions[i])),
            ],
            axis=1,
        )
        caption = (
            f"{name}: {sample.source}/{sample.image_id}, mean Dice {_mean_dice(metrics['images'][i]):.3f}"
        )
        cases.append({"caption": caption, "png": _png(Image.fromarray(side_by_side))})
    return cases


def write_seg_evaluation_report(path: Path, metrics: dict, samples, predictions) -> Path:
    html = load_template("seg_evaluation.html.j2").render(
        metrics=metrics, measures=METRICS, ci=_ci, cases=_cases(metrics, samples, predictions)
    )
    atomic_write_text(path, html)
    return path
