"""``spinedx analyze STUDY_DIR``: a study (several series) → one findings file with fused per-level grades.

A radiologist reports a study, not a slice. A study folder holds its series as entries: DICOM
series folders, NIfTI/MetaImage volumes, or single images (PNG/JPEG/DICOM files named
``<series>.png`` …). Each series is analysed as ``spinedx analyze`` analyses an input, its central
:data:`SLICES_PER_VOLUME` sagittal slices for a volume (the mid-sagittal slice and its neighbours:
discs look alike there, while lateral slices show the foramina instead). Then, per disc level, the
calibrated probabilities of every slice that found that level are averaged (Pfirrmann and Modic:
their probability vectors, decoded as the grader decodes one slice). Pfirrmann, a T2 grade, is
fused from the level's T2-weighted series when the study has any (:mod:`spinedx.io.mr_weighting`).

Output, ``OUT/<study>/``::

    findings.json          schema spinedx/study-findings@1: fused grades per level, with the
                           evidence (series, slice, box, that slice's grades) behind each
    report.html            the fused table and each series' overlay
    series/<series>/       the usual per-input outputs of each series' central slice

A series that cannot be read is reported in ``findings.json`` and the study goes on.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.io.findings import Findings
from spinedx.io.images import is_dicom_file
from spinedx.io.limits import MIN_SPINE_SIDE
from spinedx.io.mr_weighting import T2
from spinedx.io.output_location import atomic_directory, unique_output_names
from spinedx.io.volumes import SagittalSlice, check_spine_geometry, read_sagittal_stack
from spinedx.pipelines.mri_discs.pipeline import MODEL_NAME, Analysis, MriDiscPipeline
from spinedx.report.html import load_template, png_base64
from spinedx.report.overlay import render_overlay
from spinedx.tasks.disc_grading.network import BINARY_TASKS, pfirrmann_grade

SCHEMA = "spinedx/study-findings@1"
SLICES_PER_VOLUME = 3
SERIES_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz", ".mha", ".mhd")
"""File entries of a study folder taken as series (a .mhd's .raw/.zraw data file is not one)."""


def is_study(path: Path) -> bool:
    """A folder whose entries are series: it holds sub-folders or non-DICOM images/volumes.

    A folder holding only DICOM files is one series (the existing single-input behaviour).
    """
    if not path.is_dir():
        return False
    entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    if any(entry.is_dir() for entry in entries):
        return True
    files = [entry for entry in entries if entry.is_file()]
    return any(_suffix(entry) in SERIES_SUFFIXES and not is_dicom_file(entry) for entry in files)


def study_series(path: Path) -> list[Path]:
    """The series of a study folder, in name order."""
    series = [
        entry
        for entry in sorted(path.iterdir())
        if not entry.name.startswith(".") and (entry.is_dir() or _suffix(entry) in SERIES_SUFFIXES)
    ]
    if not series:
        raise InputError(f"{path}: the study folder holds no series (DICOM folders, volumes or images)")
    return series


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


@dataclass
class SeriesResult:
    name: str
    path: Path
    analyses: list[Analysis] = field(default_factory=list)
    images: list[SagittalSlice] = field(default_factory=list)
    """The analysed slices, same order as ``analyses`` (patient right to left)."""
    error: str | None = None


def pfirrmann_sources(weightings: list[str | None]) -> np.ndarray:
    """Which of a level's observations its fused Pfirrmann grade reads: the T2-weighted ones when there
    are any, else all (a boolean mask)."""
    t2 = np.array([weighting == T2 for weighting in weightings], dtype=bool)
    return t2 if t2.any() else np.ones(len(weightings), dtype=bool)


def fuse_levels(observations: list[tuple[str, int | None, Findings]], decode: str = "expected") -> list[dict]:
    """Fused grades per disc level from ``(series name, slice index, findings)`` observations.

    Binary grades: the mean calibrated probability; Pfirrmann/Modic: the mean probability vector,
    Pfirrmann over :func:`pfirrmann_sources` and decoded with ``decode``, Modic by its most probable
    grade. Levels run caudal to cranial.
    """
    by_level: dict[str, list[tuple[str, int | None, str | None, object]]] = {}
    labels: dict[str, int] = {}
    for series, slice_index, findings in observations:
        for disc in findings.discs:
            entry = (series, slice_index, findings.input.weighting, disc)
            by_level.setdefault(disc.level, []).append(entry)
            labels[disc.level] = disc.ivd_label
    fused = []
    for level in sorted(by_level, key=lambda name: labels[name]):
        discs = [disc for *_, disc in by_level[level]]
        grades: dict[str, dict] = {
            name: {"probability": float(np.mean([getattr(d.grades, name).probability for d in discs]))}
            for name in BINARY_TASKS
        }
        weightings = [weighting for _, _, weighting, _ in by_level[level]]
        sources = pfirrmann_sources(weightings)
        uses_t2 = T2 in weightings
        pfirrmann = np.mean(
            [discs[i].grades.pfirrmann.probabilities for i in np.flatnonzero(sources)], axis=0
        )
        grades["pfirrmann"] = {
            "grade": int(pfirrmann_grade(pfirrmann[None], decode)[0]),
            "probabilities": [float(p) for p in pfirrmann],
        }
        modic = np.mean([d.grades.modic.probabilities for d in discs], axis=0)
        grades["modic"] = {"grade": int(np.argmax(modic)), "probabilities": [float(p) for p in modic]}
        stenosis = [d.grades.stenosis.probability for d in discs if getattr(d.grades, "stenosis", None)]
        if stenosis:
            grades["stenosis"] = {"probability": float(np.mean(stenosis))}
        fused.append(
            {
                "level": level,
                "ivd_label": labels[level],
                "grades": grades,
                "n_observations": len(discs),
                "pfirrmann_from": "T2-weighted series" if uses_t2 else "all series",
                "evidence": [
                    {
                        "series": series,
                        "slice_index": slice_index,
                        "weighting": weighting,
                        "box": disc.box,
                        "grades": disc.grades.model_dump(mode="json"),
                    }
                    for series, slice_index, weighting, disc in by_level[level]
                ],
            }
        )
    return fused


def analyze_study(study_dir: Path, target: Path, pipeline: MriDiscPipeline, write_series) -> dict:
    """Analyse every series of ``study_dir`` into the folder ``target`` (written whole or not at all);
    returns the study findings.

    ``write_series(folder, analysis, image)`` writes one slice's usual outputs into ``folder``.
    """
    series_paths = study_series(study_dir)
    names = unique_output_names(series_paths)
    results = []
    for path, name in names.items():
        result = SeriesResult(name, path)
        try:
            stack = read_sagittal_stack(path, n=SLICES_PER_VOLUME)
            if stack[0].n_slices is None:  # a 2-D image: its one slice, not three copies of it
                stack = read_sagittal_stack(path, n=1)
            for image in stack:
                check_spine_geometry(image, MIN_SPINE_SIDE)
                result.analyses.append(pipeline.analyze_in_full(image, name))
                result.images.append(image)
        except InputError as exc:
            result.error = str(exc)
        results.append(result)
    with atomic_directory(target) as work:
        overlays = []
        for result in results:
            if not result.analyses:
                continue
            middle = len(result.analyses) // 2
            central, image = result.analyses[middle], result.images[middle]
            write_series(work / "series" / result.name, central, image)
            buffer = io.BytesIO()
            render_overlay(image.pixels, central.findings.discs, scale=1).save(buffer, format="PNG")
            overlays.append((result.name, f"series/{result.name}/report.html", png_base64(buffer.getvalue())))
        observations = [
            (result.name, analysis.findings.input.slice_index, analysis.findings)
            for result in results
            for analysis in result.analyses
        ]
        study = {
            "schema": SCHEMA,
            "study": {"path": str(study_dir), "name": study_dir.name, "n_series": len(results)},
            "model": {"name": MODEL_NAME, "version": pipeline.version},
            "levels": fuse_levels(observations, pipeline.grader.pfirrmann_decode),
            "series": [
                {
                    "name": result.name,
                    "path": str(result.path),
                    "folder": f"series/{result.name}" if result.analyses else None,
                    "n_slices_analysed": len(result.analyses),
                    "error": result.error,
                    "warnings": sorted({w for a in result.analyses for w in a.findings.warnings}),
                }
                for result in results
            ],
        }
        html = load_template("study_fused.html.j2", strict=True).render(study=study, overlays=overlays)
        atomic_write_text(work / "report.html", html)
        atomic_write_text(work / "findings.json", json.dumps(study, indent=2, allow_nan=False))
    return study
