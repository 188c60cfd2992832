"""``spinedx analyze``: inputs → ``OUT/<input-stem>/{findings.json, overlay.png, report.html}``.

With a spine segmenter (bundled when registered) the folder also holds the label map as
``masks.png`` (pixel values = classes of ``labels.json``), plus ``masks.nii.gz`` for volume inputs;
findings.json names them under ``masks``, ``mask_labels`` and ``mask_nifti`` (paths relative to it).

The task comes from ``--task`` or, for DICOM inputs, from the Modality tag (MR → mri-discs).
A plain image without ``--task`` is an error naming the file. One bad input is reported and
the batch goes on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_bytes
from spinedx.io.findings import Findings, write_findings
from spinedx.io.masks import write_label_nifti, write_label_png, write_label_table
from spinedx.io.volumes import SagittalSlice, read_sagittal
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.report.overlay import render_overlay
from spinedx.report.study_report import write_study_report
from spinedx.tasks import analysis_tasks, get_task


@dataclass
class AnalyzedInput:
    path: Path
    findings: Findings | None = None
    out_dir: Path | None = None
    error: str | None = None


def input_stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def resolve_task(image: SagittalSlice, requested: str | None) -> str:
    """The analysis task: ``requested``, else the one the registry names for the DICOM Modality."""
    names = [task.name for task in analysis_tasks()]
    if requested:
        if requested not in names:
            raise InputError(f"--task: unknown task '{requested}' (available: {', '.join(names)})")
        return requested
    by_modality = {modality: task.name for task in analysis_tasks() for modality in task.modalities}
    task = by_modality.get(image.modality or "")
    if task is None:
        what = f"Modality {image.modality}" if image.modality else "a plain image without DICOM tags"
        raise InputError(f"{image.path}: cannot tell the task from {what}; pass --task ({', '.join(names)})")
    return task


def analyze_inputs(paths: list[Path], out_dir: Path, task: str | None = None,
                   pipeline: MriDiscPipeline | None = None) -> Iterator[AnalyzedInput]:  # fmt: skip
    """Analyse each input in turn, yielding as each finishes; models load once, on first need."""
    for path in paths:
        path = Path(path)
        try:
            image = read_sagittal(path)
            name = resolve_task(image, task)
            pipeline = pipeline or get_task(name).load("analyzer").bundled()
            stem = input_stem(path)
            findings, label_map = pipeline.analyze_with_label_map(image, stem)
            target = Path(out_dir) / stem
            target.mkdir(parents=True, exist_ok=True)
            if label_map is not None:
                _write_masks(findings, label_map, image, target)
            buffer = io.BytesIO()
            render_overlay(image.pixels, findings.discs).save(buffer, format="PNG")
            atomic_write_bytes(target / "overlay.png", buffer.getvalue())
            write_findings(findings, target / "findings.json")
            write_study_report(target / "report.html", findings, buffer.getvalue())
            yield AnalyzedInput(path, findings, target)
        except InputError as exc:
            yield AnalyzedInput(path, error=str(exc))


def _write_masks(findings: Findings, label_map: np.ndarray, image: SagittalSlice, target: Path) -> None:
    write_label_png(target / "masks.png", label_map)
    write_label_table(target / "labels.json")
    findings.masks = "masks.png"
    findings.mask_labels = "labels.json"
    if image.n_slices is not None:
        write_label_nifti(target / "masks.nii.gz", label_map, image.pixel_spacing_mm)
        findings.mask_nifti = "masks.nii.gz"
