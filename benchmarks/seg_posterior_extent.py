"""Posterior disc extent from the segmenter as a stand-alone marker of herniation and bulging.

Segments every boxed series of a spider-sagittal folder, measures each reference disc box
(:func:`spinedx.pipelines.mri_discs.measure_seg.measure_disc`; reference boxes, so localisation
errors do not enter) and prints the AUROC of posterior_extent against the radiologists' herniation
and bulging grades, with 95% bootstrap CIs over patients. Without spacing.csv the extent is in
pixels; the extent divided by the disc box width (scale-free) is printed as a second line.

    python benchmarks/seg_posterior_extent.py --data ../shared/data/spider-sagittal [--model bundled]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from spinedx.evaluation.bootstrap import bootstrap_ci
from spinedx.io.atomic import atomic_write_text
from spinedx.io.spider import read_spider
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.measure_seg import measure_disc
from spinedx.tasks.spine_seg.evaluate import resolve_segmenter_weights
from spinedx.tasks.spine_seg.model import SpineSegmenter

FINDINGS = ("herniation", "bulging")


def measure_reference_discs(data: Path, segmenter: SpineSegmenter) -> pd.DataFrame:
    dataset = read_spider(data)
    rows = []
    for image_id, discs in dataset.discs.groupby("image_id"):
        image = read_sagittal(dataset.image_path(image_id))
        labels = segmenter.segment(image)
        spacing = dataset.pixel_spacing(image_id)
        for disc in discs.itertuples():
            box = (disc.xmin, disc.ymin, disc.xmax, disc.ymax)
            measured = measure_disc(labels, box, spacing)
            rows.append(
                {
                    "image_id": image_id,
                    "patient": str(disc.patient),
                    "level": disc.level,
                    "posterior_extent": measured.posterior_extent,
                    "relative_extent": None
                    if measured.posterior_extent is None
                    else measured.posterior_extent
                    / ((disc.xmax - disc.xmin) * (spacing[1] if spacing else 1.0)),
                    "unit": measured.unit,
                    **{name: int(getattr(disc, name)) for name in FINDINGS},
                }
            )
    return pd.DataFrame(rows)


def auroc_table(table: pd.DataFrame, score: str, n_resamples: int = 1000) -> dict:
    defined = table.dropna(subset=[score])
    out = {"n_discs": int(len(defined)), "n_undefined": int(len(table) - len(defined))}
    for name in FINDINGS:
        estimate, lower, upper = bootstrap_ci(
            roc_auc_score,
            defined[name].to_numpy(),
            defined[score].to_numpy(dtype=float),
            groups=defined["patient"].to_numpy(),
            n_resamples=n_resamples,
        )
        out[name] = {
            "auroc": estimate,
            "lower": lower,
            "upper": upper,
            "n_positive": int(defined[name].sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="bundled", help="'bundled', a run folder or a .pt file")
    parser.add_argument("--out", type=Path, default=None, help="write the per-disc table and AUROCs here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    segmenter = SpineSegmenter.load(resolve_segmenter_weights(args.model))
    table = measure_reference_discs(args.data, segmenter)
    results = {score: auroc_table(table, score) for score in ("posterior_extent", "relative_extent")}
    for score, result in results.items():
        cells = [
            f"{name} AUROC {r['auroc']:.3f} ({r['lower']:.3f}–{r['upper']:.3f}), {r['n_positive']} positive"
            for name, r in ((n, result[n]) for n in FINDINGS)
        ]
        print(f"{score:17s} n={result['n_discs']} (undefined {result['n_undefined']}): " + "; ".join(cells))
    if args.out:
        atomic_write_text(args.out / "posterior_extent.csv", table.to_csv(index=False))
        atomic_write_text(args.out / "posterior_extent_auroc.json", json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
