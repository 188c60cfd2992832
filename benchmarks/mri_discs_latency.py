"""End-to-end latency of `spinedx analyze --task mri-discs` on 384×384 slices (torch eager, CPU).

    python benchmarks/mri_discs_latency.py [--threads 2] [--images 20] [--data ../shared/data/spider-sagittal]

Each slice is resized to 384×384, then localised, every disc graded and the overlay rendered;
the median and 90th percentile over the images are printed. Without --data (or when the folder is
absent) synthetic slices from `spinedx synth mri` are used.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spinedx.io.volumes import SagittalSlice
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.report.overlay import render_overlay
from spinedx.synth.mri import generate_mri_dataset

SIZE = 384


def _slices(data: Path | None, n: int) -> list[np.ndarray]:
    if data is None or not (data / "images").is_dir():
        data = generate_mri_dataset(
            Path(tempfile.mkdtemp()) / "mri", n_patients=(n + 1) // 2, image_size=(SIZE, SIZE)
        )
    paths = sorted((data / "images").glob("*.png"))[:n]
    return [
        np.asarray(Image.open(p).convert("L").resize((SIZE, SIZE)), dtype=np.float32) / 255.0 for p in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = MriDiscPipeline.bundled()
    slices = _slices(args.data, args.images)
    seconds = []
    for index, pixels in enumerate([slices[0], *slices]):
        image = SagittalSlice(pixels, Path(f"slice{index}.png"), None, None, None, None, None)
        started = time.perf_counter()
        findings = pipeline.analyze(image, image.path.stem)
        render_overlay(pixels, findings.discs)
        if index:  # the first pass warms up
            seconds.append(time.perf_counter() - started)
    deciles = statistics.quantiles(seconds, n=10)
    print(f"{len(seconds)} slices of {SIZE}x{SIZE}, {args.threads} threads, torch eager: "
          f"median {statistics.median(seconds):.3f} s, p90 {deciles[-1]:.3f} s (target: median <= 0.5 s)")  # fmt: skip


if __name__ == "__main__":
    main()
