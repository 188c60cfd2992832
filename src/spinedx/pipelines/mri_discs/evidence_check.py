"""Sanity check of the grader's Grad-CAM evidence (Adebayo et al., "Sanity checks for saliency maps", 2018).

On every series of a data folder, discs are found as ``spinedx analyze`` finds them and each disc's
heatmap is made as analysis makes it. Per disc we measure the share of its heatmap mass inside the
disc region — the disc box widened posteriorly by half its width, so the posterior margin and the
canal count — for

- the trained grader,
- the same network with every weight re-initialised (a heatmap that survives this reflects the
  architecture and the input, not what the model learned),
- a uniform heatmap over the grader's view (the region's share of the view's area).

Evidence that means something puts clearly more mass in the region than both. 95% CIs: bootstrap
over patients.

With a canal stenosis model that has evidence maps (the bundled one, whose logit ranks the fused
herniation), the same three shares are measured for its Grad-CAM of every disc (``canal``): the model,
the same architecture with random weights, and a uniform map over its crop of the posterior margin.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from spinedx.data.folds import report_only
from spinedx.evaluation.bootstrap import bootstrap_ci
from spinedx.io.lumbar515 import is_lumbar515, read_lumbar515
from spinedx.io.spider import read_spider
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.canal_stenosis.network import StenosisNet
from spinedx.tasks.disc_grading.model import DiscGrader

POSTERIOR_MARGIN = 0.5
"""The disc region reaches this many box widths past the box's posterior (right) side."""


def disc_region(box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel bounds of the disc box widened posteriorly, clipped to the image."""
    xmin, ymin, xmax, ymax = box
    height, width = shape
    x1 = xmax + POSTERIOR_MARGIN * (xmax - xmin)
    return max(int(xmin), 0), max(int(ymin), 0), min(int(np.ceil(x1)), width), min(int(np.ceil(ymax)), height)


def randomised(grader: DiscGrader, seed: int) -> DiscGrader:
    """A copy of ``grader`` whose network has every weight re-initialised (cascading to the input)."""
    torch.manual_seed(seed)
    network = copy.deepcopy(grader.eager_network())
    for module in network.modules():
        if module is not network and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    clone = copy.copy(grader)
    clone.model = network.eval()
    return clone


def randomised_canal(canal: CanalStenosis, seed: int) -> CanalStenosis:
    """The canal model's architecture with freshly initialised weights (and its crop settings)."""
    torch.manual_seed(seed)
    return CanalStenosis(StenosisNet(canal.architecture["backbone"]).eval(),
                         crop={"size": canal.crop_size, "scale": canal.crop_scale},
                         calibration=canal.calibration.as_dict(), architecture=canal.architecture)  # fmt: skip


def _share(heatmap: np.ndarray, box, shape) -> float:
    """The share of ``heatmap``'s mass inside :func:`disc_region` of ``box`` (NaN for an empty map)."""
    x0, y0, x1, y1 = disc_region(box, shape)
    total = float(heatmap.sum())
    return float(heatmap[y0:y1, x0:x1].sum()) / total if total > 0 else np.nan


def _series(data_root: Path, split: Path | None) -> list[tuple[str, Path]]:
    """(patient, image path) of every series of a spider-sagittal or lumbar515-sagittal folder (with
    ``split``, of its report patients only)."""
    cohort = "lumbar515" if is_lumbar515(data_root) else "spider"
    dataset = read_lumbar515(data_root) if cohort == "lumbar515" else read_spider(data_root)
    if split is not None:
        dataset = report_only(dataset, split, cohort, ("series",))
    return [
        (str(patient), dataset.image_path(image_id))
        for image_id, patient in dataset.series[["image_id", "patient"]].itertuples(index=False)
    ]


def evidence_check(
    data_root: Path,
    pipeline: MriDiscPipeline | None = None,
    *,
    max_series: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    split: Path | None = None,
) -> dict:
    """Mass-in-region shares (trained, randomised, uniform) with CIs over patients, and their counts."""
    pipeline = pipeline or MriDiscPipeline.bundled()
    trained = pipeline.grader
    random = randomised(trained, seed)
    shares: dict[str, list[float]] = {"trained": [], "randomised": [], "uniform": []}
    canal = pipeline.stenosis if pipeline.stenosis is not None and pipeline.stenosis.has_evidence else None
    canal_models = {} if canal is None else {"trained": canal, "randomised": randomised_canal(canal, seed)}
    canal_shares: dict[str, list[float]] = {name: [] for name in (*canal_models, "uniform")}
    patients: list[str] = []
    for patient, path in _series(Path(data_root), split)[:max_series]:
        pixels = read_sagittal(path).pixels
        detections, _ = pipeline.localizer.detect(pixels)
        if not detections:
            continue
        boxes = [detection.box for detection in detections]
        labels = [detection.ivd_label for detection in detections]
        explained = [trained.evidence_finding(grade) for grade in trained.grade(pixels, boxes, labels)]
        for name, grader in (("trained", trained), ("randomised", random)):
            for box, heatmap in zip(boxes, grader.evidence(pixels, boxes, labels, explained), strict=True):
                shares[name].append(_share(heatmap, box, pixels.shape))
        for name, model in canal_models.items():
            for box, heatmap in zip(boxes, model.evidence(pixels, boxes, labels), strict=True):
                canal_shares[name].append(_share(heatmap, box, pixels.shape))
        if canal is not None:
            flat = np.ones((canal.crop_size, canal.crop_size), dtype=np.float32)
            canal_shares["uniform"] += [_share(canal.in_image(flat, box, pixels.shape), box, pixels.shape)
                                        for box in boxes]  # fmt: skip
        flat = np.ones((trained.crop_size, trained.crop_size), dtype=np.float32)
        for box in boxes:
            view = trained.view_in_image(flat, box, pixels.shape)
            x0, y0, x1, y1 = disc_region(box, pixels.shape)
            shares["uniform"].append(float(view[y0:y1, x0:x1].sum()) / max(float(view.sum()), 1.0))
        patients += [patient] * len(boxes)
    groups = np.asarray(patients)
    result: dict = {"data": str(data_root), "n_discs": len(patients), "n_patients": len(set(patients))}
    result |= _intervals(shares, groups, n_resamples, seed)
    if canal is not None:
        result["canal"] = _intervals(canal_shares, groups, n_resamples, seed)
    return result


def _intervals(shares: dict[str, list[float]], groups: np.ndarray, n_resamples: int, seed: int) -> dict:
    """Mean share per heatmap source with its bootstrap CI over patients."""
    result = {}
    for name, values in shares.items():
        values_array = np.asarray(values, dtype=float)
        usable = np.isfinite(values_array)
        estimate, low, high = bootstrap_ci(
            np.mean, values_array[usable], groups=groups[usable], n_resamples=n_resamples, seed=seed
        )
        result[name] = {"estimate": estimate, "lower": low, "upper": high}
    return result
