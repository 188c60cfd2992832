"""Latency of the spine segmenter on one 384×384 sagittal slice (torch eager, CPU).

    python benchmarks/seg_latency.py [--threads 2] [--images 20] [--rounds 3] [--model bundled]
        [--data ../shared/data/spider-sagittal]

Each slice is resized to 384×384 and segmented into a label map of that size (normalise,
letterbox, U-Net, probabilities mapped back, arg-max), after one warm-up call. Prints the median
and 90th percentile over all slices and rounds, the thread count and the weight file size.
Without --data (or when the folder is absent) synthetic slices from `spinedx synth mri` are used.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sagittal_slices import sagittal_slices

from spinedx.tasks.spine_seg.evaluate import resolve_segmenter_weights
from spinedx.tasks.spine_seg.model import SpineSegmenter

SIZE = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="bundled", help="'bundled', a run folder or a .pt file")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = resolve_segmenter_weights(args.model)
    segmenter = SpineSegmenter.load(weights)
    slices = sagittal_slices(args.data, args.images, SIZE)
    segmenter.segment(slices[0])  # warm-up: first-call allocations
    seconds = []
    for _ in range(args.rounds):
        for pixels in slices:
            started = time.perf_counter()
            segmenter.segment(pixels)
            seconds.append(time.perf_counter() - started)
    p90 = float(np.percentile(seconds, 90))
    print(
        f"spine segmenter, {SIZE}x{SIZE}, {args.threads} thread(s), {len(seconds)} runs: "
        f"median {statistics.median(seconds):.3f} s, p90 {p90:.3f} s; weights {weights.stat().st_size / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
