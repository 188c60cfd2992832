"""The MRI disc pipeline with its networks run by ONNX Runtime (same pre- and post-processing).

The localiser, the grader and, when present, the spine segmenter run in ONNX Runtime sessions;
the input check (frozen feature extractor + linear head) stays in torch.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from spinedx.models.onnx_runtime import OnnxRuntimeModule, export_onnx
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

EXAMPLE_BATCH = 2  # not 1: the exporter would fix a batch axis it sees as 1


def _image_network_on_onnx_runtime(stage, side: int, path: Path, threads: int | None):
    """A copy of ``stage`` whose ``model`` (one grey image in, logits out) runs in ONNX Runtime."""
    stage = copy.copy(stage)
    export_onnx(
        stage.eager_network(), [torch.zeros(EXAMPLE_BATCH, 1, side, side)], path, ["image"], ["logits"]
    )
    stage.model = OnnxRuntimeModule(path, threads)
    return stage


def onnx_runtime_pipeline(
    pipeline: MriDiscPipeline, work_dir: Path, threads: int | None = None
) -> MriDiscPipeline:
    """A copy of ``pipeline`` whose networks run in ONNX Runtime sessions, exported to ``work_dir``
    (``disc_localizer.onnx``, ``disc_grader.onnx``, ``spine_segmenter.onnx``)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    localizer = _image_network_on_onnx_runtime(
        pipeline.localizer, pipeline.localizer.settings.input_size, work_dir / "disc_localizer.onnx", threads
    )
    segmenter = pipeline.segmenter
    if segmenter is not None:
        segmenter = _image_network_on_onnx_runtime(
            segmenter, segmenter.input_size, work_dir / "spine_segmenter.onnx", threads
        )
    grader = copy.copy(pipeline.grader)
    crop = grader.crop_size
    grader_path = export_onnx(
        grader.eager_network(),
        [torch.zeros(EXAMPLE_BATCH, 1, crop, crop), torch.zeros(EXAMPLE_BATCH, dtype=torch.int64)],
        work_dir / "disc_grader.onnx",
        ["images", "levels"],
        ["binary", "pfirrmann", "modic"],
    )
    grader.model = OnnxRuntimeModule(grader_path, threads)
    return dataclasses.replace(
        pipeline,
        localizer=localizer,
        grader=grader,
        segmenter=segmenter,
        version=f"{pipeline.version}+onnxruntime",
    )
