"""``spinedx evaluate-seg``: a spine segmenter scored on a folder of images and masks
(``spinedx evaluate RUN`` of a spine-seg run: :func:`evaluate_run`).

The model is a training run folder (its ``spine_segmenter.pt``), a weight file, or ``bundled``.
The data is any folder :func:`spinedx.tasks.spine_seg.data.load_seg_source` reads; each image is scored
only on the classes its mask labels (:mod:`spinedx.evaluation.segmentation`), CIs are bootstrap
over patients. ``metrics.json`` and a self-contained ``report.html`` (with overlays of the best,
median and worst image by mean Dice) go to the output folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinedx.errors import InputError
from spinedx.evaluation.segmentation import image_metrics, summarize_images
from spinedx.io.atomic import atomic_write_text
from spinedx.io.masks import SEG_LABELS
from spinedx.tasks.spine_seg.data import SegSample, load_seg_source
from spinedx.tasks.spine_seg.report import write_seg_evaluation_report

BUNDLED = "bundled"


@dataclass
class SegEvaluation:
    metrics: dict
    metrics_path: Path
    report_path: Path


def resolve_segmenter_weights(model: str | Path) -> Path:
    """``bundled``, a run folder holding ``spine_segmenter.pt``, or a weight file."""
    from spinedx.models.registry import resolve_weights
    from spinedx.tasks.spine_seg.model import REGISTRY_NAME, WEIGHTS_NAME

    if str(model) == BUNDLED:
        return resolve_weights(REGISTRY_NAME).path
    path = Path(model)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise InputError(f"{path}: no segmenter weights (give a run folder, a .pt file or '{BUNDLED}')")
    return path


def score_and_report(samples: list[SegSample], predictions: list[np.ndarray], out_dir: Path,
                     n_resamples: int = 1000, title: str = "") -> SegEvaluation:  # fmt: skip
    """Score ``predictions`` (label maps, one per sample) and write metrics.json + report.html."""
    per_image = [
        image_metrics(p, s.labels, s.labelled, s.pixel_spacing_mm)
        for s, p in zip(samples, predictions, strict=True)
    ]
    groups = [s.group for s in samples]
    summary = summarize_images(per_image, groups, n_resamples)
    sources = sorted({s.source for s in samples})
    # Sources differ in what they label and how hard they are: each also gets its own figures.
    by_source = {
        source: summarize_images(
            [e for e, s in zip(per_image, samples, strict=True) if s.source == source],
            [g for g, s in zip(groups, samples, strict=True) if s.source == source],
            n_resamples,
        )
        for source in sources
    }
    images = [
        {
            "image_id": s.image_id,
            "source": s.source,
            "patient": s.group,
            "distance_unit": "mm" if s.pixel_spacing_mm else "px",
            "classes": {SEG_LABELS[c]: values for c, values in entry.items()},
        }
        for s, entry in zip(samples, per_image, strict=True)
    ]
    units = sorted({image["distance_unit"] for image in images})
    metrics = {
        "title": title,
        "n_images": len(samples),
        "n_patients": len({s.group for s in samples}),
        "sources": sources,
        "distance_unit": units[0] if len(units) == 1 else "mixed (mm where the spacing is known, else px)",
        "classes": summary,
        "by_source": by_source,
        "images": images,
    }
    out_dir = Path(out_dir)
    metrics_path = atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    report_path = write_seg_evaluation_report(out_dir / "report.html", metrics, samples, predictions)
    return SegEvaluation(metrics, metrics_path, report_path)


def evaluate_segmenter(
    model: str | Path, data: Path, out_dir: Path, n_resamples: int = 1000
) -> SegEvaluation:
    from spinedx.tasks.spine_seg.network import load_segmenter, segment_pixels

    weights = resolve_segmenter_weights(model)
    network, settings = load_segmenter(weights)
    samples = load_seg_source(data)
    predictions = [segment_pixels(network, s.pixels, settings["input_size"]) for s in samples]
    return score_and_report(samples, predictions, out_dir, n_resamples, title=f"{weights} on {data}")


def evaluate_run(run_dir: Path, *, data: Path | None = None, images: Path | None = None,
                 out_dir: Path | None = None, n_resamples: int = 1000) -> SegEvaluation:  # fmt: skip
    """A spine-seg training run scored: its final model on ``data`` (an image/mask folder) into
    ``out_dir`` (default ``RUN/evaluation``); without ``data``, the run's cross-validation figures
    (held-out patients) as training wrote them (``RUN/cv/metrics.json`` and ``report.html``)."""
    run_dir = Path(run_dir)
    if images is not None:
        raise InputError("--images: a spine-seg run is scored on --data, a folder with images/ and masks/")
    if data is not None:
        return evaluate_segmenter(run_dir, Path(data), Path(out_dir or run_dir / "evaluation"), n_resamples)
    metrics_path = run_dir / "cv" / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(
            f"{metrics_path}: missing (a recipe without real sources has no cross-validation); "
            "give --data, a folder with images/ and masks/"
        )
    return SegEvaluation(json.loads(metrics_path.read_text()), metrics_path, run_dir / "cv" / "report.html")
