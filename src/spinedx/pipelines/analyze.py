"""``spinedx analyze``: inputs → ``OUT/<input-stem>/{findings.json, overlay.png, report.html}``.

With a spine segmenter (bundled when registered) the folder also holds the label map as
``masks.png`` (pixel values = classes of ``labels.json``), plus ``masks.nii.gz`` for volume inputs;
findings.json names them under ``masks``, ``mask_labels`` and ``mask_nifti`` (paths relative to it).
Each disc's Grad-CAM heatmap is ``evidence/<level>.png`` (named by the disc's ``evidence``).

A folder holding several series is a study: :mod:`spinedx.pipelines.study` analyses each series and
writes one findings file with fused per-level grades (MRI discs).

The task comes from ``--task`` or, for DICOM inputs, from the Modality tag (MR → mri-discs).
A plain image without ``--task`` is an error naming the file. One bad input is reported and
the batch goes on.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_bytes
from spinedx.io.findings import Evidence, Findings, write_findings
from spinedx.io.limits import MIN_SPINE_SIDE
from spinedx.io.masks import PNG_COMPRESS_LEVEL, write_label_nifti, write_label_png, write_label_table
from spinedx.io.output_location import atomic_directory, unique_output_names
from spinedx.io.volumes import SagittalSlice, read_sagittal
from spinedx.pipelines.mri_discs.pipeline import Analysis, MriDiscPipeline
from spinedx.pipelines.study import analyze_study, is_study
from spinedx.report.overlay import render_evidence, render_overlay
from spinedx.report.study_report import write_study_report
from spinedx.tasks import analysis_tasks, get_task


@dataclass
class AnalyzedInput:
    path: Path
    findings: Findings | None = None
    out_dir: Path | None = None
    error: str | None = None
    study: dict | None = None
    """For a study folder (several series): its fused findings (``findings`` is then None)."""
    note: str | None = None
    """Said about the input without failing it (e.g. that its output folder was renamed)."""


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
                   pipeline: MriDiscPipeline | None = None, *,
                   finish: Callable[[Path, Path], object] | None = None) -> Iterator[AnalyzedInput]:  # fmt: skip
    """Analyse each input in turn, yielding as each finishes; models load once, on first need.

    Each input gets its own folder ``out_dir/<name>`` (inputs with the same stem are told apart as
    ``<stem>-2``, …, and the result says so), written whole or not at all. ``finish(folder, input)``
    adds to a folder before it is put in place (e.g. DICOM objects); its InputError fails the input.
    """
    names = unique_output_names([Path(p) for p in paths])
    notes = dict(zip(names.renamed, names.notes(), strict=True))
    for path, name in names.items():
        try:
            if is_study(Path(path)):
                if task not in (None, "mri-discs"):
                    raise InputError(f"{path}: a study folder is analysed as mri-discs, not {task}")
                if finish is not None:
                    raise InputError(
                        f"{path}: --dicom takes DICOM series and files, not a study folder of series"
                    )
                pipeline = pipeline or get_task("mri-discs").load("analyzer").bundled()
                target = Path(out_dir) / name
                study = analyze_study(Path(path), target, pipeline, _write_result)
                yield AnalyzedInput(path, out_dir=target, study=study, note=notes.get(path))
                continue
            image = read_sagittal(path, min_side=MIN_SPINE_SIDE)
            task_name = resolve_task(image, task)
            pipeline = pipeline or get_task(task_name).load("analyzer").bundled()
            analysis = pipeline.analyze_in_full(image, name)
            target = Path(out_dir) / name
            with atomic_directory(target) as work:
                _write_result(work, analysis, image)
                if finish is not None:
                    finish(work, path)
            yield AnalyzedInput(path, analysis.findings, target, note=notes.get(path))
        except InputError as exc:
            yield AnalyzedInput(path, error=str(exc))


def _write_result(folder: Path, analysis: Analysis, image: SagittalSlice) -> None:
    """findings.json (last: its presence marks a complete folder), overlay.png, report.html, masks
    and heatmaps."""
    findings = analysis.findings
    if analysis.label_map is not None:
        _write_masks(findings, analysis.label_map, image, folder)
    evidence_pngs = _write_evidence(findings, analysis, image, folder)
    overlay = _png_bytes(render_overlay(image.pixels, findings.discs))
    atomic_write_bytes(folder / "overlay.png", overlay)
    write_study_report(folder / "report.html", findings, overlay, evidence_pngs)
    write_findings(findings, folder / "findings.json")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _write_evidence(
    findings: Findings, analysis: Analysis, image: SagittalSlice, folder: Path
) -> list[bytes]:
    """Each disc's heatmap as ``evidence/<level>.png`` (named in its findings); returns the report's
    rendering of each (the region around the disc with its heatmap blended over it)."""
    rendered = []
    for disc, evidence in zip(findings.discs, analysis.evidence, strict=False):
        relative = f"evidence/{disc.level.replace('/', '-')}.png"
        heatmap = np.clip(evidence.heatmap * 255.0 + 0.5, 0, 255).astype(np.uint8)
        atomic_write_bytes(folder / relative, _png_bytes(Image.fromarray(heatmap)))
        disc.evidence = Evidence(heatmap=relative, finding=evidence.finding, model=evidence.model)
        rendered.append(_png_bytes(render_evidence(image.pixels, evidence.heatmap, disc.box)))
    return rendered


def _write_masks(findings: Findings, label_map: np.ndarray, image: SagittalSlice, target: Path) -> None:
    write_label_png(target / "masks.png", label_map)
    write_label_table(target / "labels.json")
    findings.masks = "masks.png"
    findings.mask_labels = "labels.json"
    if image.n_slices is not None:
        write_label_nifti(target / "masks.nii.gz", label_map, image.pixel_spacing_mm)
        findings.mask_nifti = "masks.nii.gz"
