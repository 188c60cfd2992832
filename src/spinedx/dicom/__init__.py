"""DICOM results of an analysis (SR, SEG, Secondary Capture) and DICOM de-identification.

:func:`write_dicom_results` turns one ``spinedx analyze`` output folder into DICOM objects in
the source study: ``sr.dcm`` (TID 1500 measurement report, :mod:`.sr`), ``seg.dcm`` (spine
segmentation, :mod:`.seg`; only when the analysis wrote ``masks.png`` and the source has a
frame of reference) and ``overlay.dcm``
(Secondary Capture of ``overlay.png``, :mod:`.sc`). De-identification lives in :mod:`.deid`.
Results are research output: every object says so (series description, and
ContentQualification RESEARCH where the IOD has it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from spinedx.dicom.sc import build_sc
from spinedx.dicom.seg import build_seg
from spinedx.dicom.source import find_source_image
from spinedx.dicom.sr import build_sr
from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path
from spinedx.io.findings import Findings, read_findings

SR_FILE, SEG_FILE, SC_FILE = "sr.dcm", "seg.dcm", "overlay.dcm"

__all__ = ["SC_FILE", "SEG_FILE", "SR_FILE", "write_dicom_results"]


def write_dicom_results(result_dir: Path, source: Path) -> list[Path]:
    """Write sr.dcm, seg.dcm and overlay.dcm into ``result_dir``.

    seg.dcm is written only when the analysis wrote masks.png and the source image has a
    FrameOfReferenceUID (the SEG IOD needs one); the returned list says which files exist.

    ``result_dir`` is one input's ``spinedx analyze`` folder (findings.json, overlay.png and
    optionally masks.png); ``source`` is the DICOM file or series folder that was analysed.
    Every object is built before any is written, and each is written atomically, so a failure
    leaves the folder as it was. Returns the written paths. Raises :class:`InputError` (one
    line, no patient identifiers) for a non-DICOM source, a source that does not match the
    findings, or a missing or damaged result file.
    """
    result_dir, source = Path(result_dir), Path(source)
    findings = _read_findings(result_dir / "findings.json")
    image = find_source_image(source, findings.input.slice_index)
    objects = {SR_FILE: build_sr(findings, image)}
    masks = result_dir / (getattr(findings, "masks", None) or "masks.png")
    # A SEG must share its source's frame of reference; a source without one gets no SEG.
    if masks.is_file() and "FrameOfReferenceUID" in image.dataset:
        objects[SEG_FILE] = build_seg(findings, _read_png(masks, "L"), image)
    objects[SC_FILE] = build_sc(findings, _read_png(result_dir / "overlay.png", "RGB"), image)
    written = []
    for name, dataset in objects.items():
        with atomic_path(result_dir / name) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        written.append(result_dir / name)
    return written


def _read_findings(path: Path) -> Findings:
    try:
        return read_findings(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found (not a spinedx analyze output folder?)") from None
    except (OSError, ValidationError, ValueError) as exc:
        raise InputError(f"{path}: not a valid findings file ({type(exc).__name__})") from None


def _read_png(path: Path, mode: str) -> np.ndarray:
    """A result PNG as an array; a label map ("L") must be single-channel, as the pipeline writes it."""
    try:
        with Image.open(path) as picture:
            picture.load()
            if mode == "L" and picture.mode not in ("L", "P", "I;16", "I"):
                raise InputError(f"{path}: expected a single-channel label map, got mode {picture.mode}")
            return np.asarray(picture if mode == "L" else picture.convert(mode))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable PNG ({type(exc).__name__})") from None
