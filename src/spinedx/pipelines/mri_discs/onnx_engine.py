"""The MRI disc pipeline with its localiser and grader networks run by ONNX Runtime (same pre- and
post-processing; other stages, such as the segmenter, stay as they are)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from spinedx.inference.onnx_runtime import OnnxRuntimeModule, export_onnx
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

EXAMPLE_BATCH = 2  # not 1: the exporter would fix a batch axis it sees as 1


def onnx_runtime_pipeline(
    pipeline: MriDiscPipeline, work_dir: Path, threads: int | None = None
) -> MriDiscPipeline:
    """A copy of ``pipeline`` whose localiser and grader networks run in ONNX Runtime sessions.

    The networks are exported to ``work_dir`` (``disc_localizer.onnx``, ``disc_grader.onnx``).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    localizer, grader = copy.copy(pipeline.localizer), copy.copy(pipeline.grader)
    side = localizer.settings.input_size
    localizer_path = export_onnx(
        localizer.model,
        [torch.zeros(EXAMPLE_BATCH, 1, side, side)],
        work_dir / "disc_localizer.onnx",
        ["image"],
        ["logits"],
    )
    localizer.model = OnnxRuntimeModule(localizer_path, threads)
    crop = grader.crop_size
    grader_path = export_onnx(
        grader.model,
        [torch.zeros(EXAMPLE_BATCH, 1, crop, crop), torch.zeros(EXAMPLE_BATCH, dtype=torch.int64)],
        work_dir / "disc_grader.onnx",
        ["images", "levels"],
        ["binary", "pfirrmann", "modic"],
    )
    grader.model = OnnxRuntimeModule(grader_path, threads)
    return dataclasses.replace(
        pipeline, localizer=localizer, grader=grader, version=f"{pipeline.version}+onnxruntime"
    )
