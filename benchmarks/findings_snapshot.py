"""Findings of the 20-slice latency benchmark set, every key but timing, as one JSON file.

    python benchmarks/findings_snapshot.py OUT.json [--data ../shared/data/spider-sagittal]

Run it on two checkouts and compare the files (``cmp a.json b.json``) to show that a change kept
the analysis identical: the same slices as ``benchmarks/mri_discs_latency.py`` (384×384), the
bundled models, torch eager, 2 threads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sagittal_slices import sagittal_slices

from spinedx.io.volumes import SagittalSlice
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

SIZE = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipeline = MriDiscPipeline.bundled()
    snapshot = []
    for index, pixels in enumerate(sagittal_slices(args.data, args.images, SIZE)):
        image = SagittalSlice(pixels, Path(f"slice{index}.png"), None, None, None, None, None)
        findings = json.loads(pipeline.analyze(image, image.path.stem).to_json())
        findings.pop("timing_s")
        snapshot.append(findings)
    args.out.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    print(f"{len(snapshot)} slices, {sum(len(f['discs']) for f in snapshot)} discs -> {args.out}")


if __name__ == "__main__":
    main()
