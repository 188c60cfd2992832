"""End-to-end latency of `spinedx analyze --task mri-discs` on 384×384 slices: torch eager vs ONNX Runtime.

    python benchmarks/mri_discs_latency.py [--threads 2] [--images 20] [--rounds 3] [--data ../shared/data/spider-sagittal]

Each slice is resized to 384×384 and analysed by the bundled pipeline (input check, segmentation,
localisation, grading and measuring every disc) and the overlay rendered, once per engine, and once
more in torch with the per-disc Grad-CAM evidence that `spinedx analyze` adds (the same
pre- and post-processing; the localiser, grader and segmenter networks run in torch eager or in ONNX
Runtime sessions, the input check in torch for both). Engines alternate round by round over the same slices so that both see the same
machine load; the median and 90th percentile per slice and the speed ratio are printed. Without
--data (or when the folder is absent) synthetic slices from `spinedx synth mri` are used. ONNX
Runtime needs ``pip install 'spinedx[onnx]'``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sagittal_slices import sagittal_slices

from spinedx.io.volumes import SagittalSlice
from spinedx.pipelines.mri_discs.onnx_engine import onnx_runtime_pipeline
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.report.overlay import render_overlay

SIZE = 384


def _time_slices(pipeline: MriDiscPipeline, slices: list[np.ndarray], evidence: bool = False) -> list[float]:
    seconds = []
    for index, pixels in enumerate(slices):
        image = SagittalSlice(pixels, Path(f"slice{index}.png"), None, None, None, None, None)
        started = time.perf_counter()
        findings = pipeline.analyze_in_full(image, image.path.stem, evidence=evidence).findings
        render_overlay(pixels, findings.discs)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per engine")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eager = MriDiscPipeline.bundled()
    engines = {  # name -> (pipeline, with Grad-CAM evidence)
        "torch eager": (eager, False),
        "ONNX Runtime": (onnx_runtime_pipeline(eager, Path(tempfile.mkdtemp()), threads=args.threads), False),
        "torch eager + Grad-CAM evidence (as `spinedx analyze`)": (eager, True),
    }
    slices = sagittal_slices(args.data, args.images, SIZE)
    for pipeline, evidence in engines.values():  # warm-up
        _time_slices(pipeline, slices[:2], evidence)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, (pipeline, evidence) in engines.items():
            seconds[name].extend(_time_slices(pipeline, slices, evidence))
    print(f"{len(slices)} slices of {SIZE}x{SIZE} x {args.rounds} rounds, {args.threads} threads "
          "(input check, segment, localise, grade and measure every disc, overlay; target: median <= 0.5 s)")  # fmt: skip
    print("| engine | median s | p90 s |\n| --- | --- | --- |")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.quantiles(values, n=10)[-1]:.3f} |")
    ratio = statistics.median(seconds["torch eager"]) / statistics.median(seconds["ONNX Runtime"])
    print(f"ONNX Runtime / torch eager speed-up (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
