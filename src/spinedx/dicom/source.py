"""Find the stored DICOM image behind an analysed slice, and map display pixels back onto it.

``spinedx analyze`` works on a display-ready slice (cranial up, anterior left; see
:mod:`spinedx.io.volumes`). DICOM results must instead be drawn on the source image as
stored, so :func:`find_source_image` returns that image's header with the flips/transpose
that turn its stored pixels into the analysed slice.

Supported sources: a single-frame DICOM file (analysed as one 2-D image) and a folder holding
one DICOM series of sagittal single-frame images (the analysed slice is instance
``findings.input.slice_index`` in the reader's order: along the slice normal by
ImagePositionPatient, or by InstanceNumber when the series has no geometry). A slice
reformatted from an axial or coronal acquisition, or taken from a multi-frame file, has no
single stored image to point at and is refused with :class:`~spinedx.errors.InputError`.

The mapping is checked against the reader itself: the source image laid out with it must
correlate with what :func:`~spinedx.io.volumes.read_sagittal` returns, so a drift between the
two modules fails loudly instead of misplacing contours. Messages never quote header values
(patient identifiers stay out of logs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from spinedx.errors import InputError
from spinedx.io.images import is_dicom_file
from spinedx.io.volumes import read_sagittal

MIN_CORRELATION = 0.9
"""Least |Pearson r| between the re-laid-out source pixels and the analysed slice (windowing,
inversion and 8-bit rounding keep a true match well above it; another image falls far below)."""

_AS_STORED = {"transpose": False, "flip_rows": False, "flip_cols": False}
_NOT_DICOM = "DICOM results (SR, SEG, overlay) need a DICOM source"


@dataclass(frozen=True)
class SourceImage:
    """A stored DICOM image and the layout change that made it the analysed slice.

    Display = stored, transposed if ``transpose``, then flipped upside down if ``flip_rows``
    and left-right if ``flip_cols``.
    """

    path: Path
    dataset: Dataset
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    patient_orientation: tuple[str, str] = ("P", "F")
    """PatientOrientation of the display layout (directions of increasing column, row). Without
    a header orientation this is the layout the analysis assumed: anterior left, cranial up."""

    def to_display(self, stored: np.ndarray) -> np.ndarray:
        """Lay out a stored-orientation array (rows, cols, ...) like the analysed slice."""
        out = np.swapaxes(stored, 0, 1) if self.transpose else stored
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def to_stored(self, display: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_display`: a display-layout array back in the stored layout."""
        out = display[::-1] if self.flip_rows else display
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(np.swapaxes(out, 0, 1) if self.transpose else out)

    def points_to_stored(self, points: np.ndarray, display_shape: tuple[int, int]) -> np.ndarray:
        """(x, y) points in display pixel coordinates -> stored ones (both with (0, 0) at the
        top-left corner of the top-left pixel, the DICOM SCOORD convention)."""
        height, width = display_shape
        out = np.array(points, dtype=np.float64)
        if self.flip_cols:
            out[:, 0] = width - out[:, 0]
        if self.flip_rows:
            out[:, 1] = height - out[:, 1]
        return out[:, ::-1].copy() if self.transpose else out


def find_source_image(source: str | Path, slice_index: int | None) -> SourceImage:
    """The stored image of ``source`` that became the analysed slice ``slice_index``.

    ``source`` is the analysed DICOM file or series folder; ``slice_index`` is
    ``findings.input.slice_index`` (None for a 2-D input). Raises :class:`InputError` for a
    missing or non-DICOM source, an unsupported layout, or a source that does not match the
    analysed slice.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: file not found")
    image = _series_image(source, slice_index) if source.is_dir() else _file_image(source, slice_index)
    _check_matches_reader(image, source, slice_index)
    return image


TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip
"""Type 2 patient/study attributes highdicom copies from the source into SR, SEG and SC: a source that
lacks one gets it empty (which DICOM allows), not a crash while writing the results."""


def _read_header(path: Path) -> Dataset | None:
    """The header of a DICOM image file (no pixel data), or None when it is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return None
    if "Rows" not in ds or "SOPInstanceUID" not in ds:
        return None
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _file_image(path: Path, slice_index: int | None) -> SourceImage:
    header = _read_header(path) if is_dicom_file(path) else None
    if header is None:
        raise InputError(f"{path}: not a DICOM image; {_NOT_DICOM}")
    _refuse_multiframe(header, path)
    if slice_index not in (None, 0):
        raise InputError(f"{path}: findings are for slice {slice_index} but a DICOM file has one image")
    iop = _vector(header.get("ImageOrientationPatient"), 6)
    # read_sagittal re-lays out a single image only when its header says it is sagittal.
    if iop is None:
        return SourceImage(path=path, dataset=header)
    layout = _display_layout(iop) if _plane(iop) == "sagittal" else _AS_STORED
    return SourceImage(path=path, dataset=header, **layout, patient_orientation=_orientation(iop, **layout))


def _series_image(folder: Path, slice_index: int | None) -> SourceImage:
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith(".") and entry.name.upper() != "DICOMDIR":
            header = _read_header(entry)
            if header is not None:
                series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((entry, header))
    if not series:
        raise InputError(f"{folder}: no DICOM images in this folder; {_NOT_DICOM}")
    chosen = max(series.values(), key=len)  # the reader's choice: the series with most images
    for entry, header in chosen:
        _refuse_multiframe(header, entry)
    if slice_index is None or not 0 <= slice_index < len(chosen):
        raise InputError(
            f"{folder}: findings name slice {slice_index} but the series has {len(chosen)} images"
        )
    iops = [_vector(h.get("ImageOrientationPatient"), 6) for _, h in chosen]
    ipps = [_vector(h.get("ImagePositionPatient"), 3) for _, h in chosen]
    if any(v is None for v in (*iops, *ipps)) or _normal(iops[0]) is None:
        # No geometry: the reader stacks by InstanceNumber and shows the images as stored.
        ordered = sorted(chosen, key=lambda item: (_int_or_zero(item[1].get("InstanceNumber")), item[0].name))
        path, header = ordered[slice_index]
        return SourceImage(path=path, dataset=header)
    plane = _plane(iops[0])
    if plane != "sagittal":
        raise InputError(
            f"{folder}: the analysed slice was reformatted from {plane} images, so no stored "
            "image holds it; DICOM results need a sagittal series"
        )
    normal = _normal(iops[0])
    order = np.argsort([float(ipp @ normal) for ipp in ipps], kind="stable")
    path, header = chosen[int(order[slice_index])]
    layout = _display_layout(iops[0])
    return SourceImage(
        path=path, dataset=header, **layout, patient_orientation=_orientation(iops[0], **layout)
    )


def _refuse_multiframe(header: Dataset, path: Path) -> None:
    if _int_or_zero(header.get("NumberOfFrames")) > 1:
        raise InputError(f"{path}: multi-frame DICOM sources are not supported for DICOM results yet")


def _display_layout(iop: np.ndarray) -> dict[str, bool]:
    """Flips/transpose that put a sagittal image cranial-up, anterior-left (rows toward the
    feet, columns toward the back), as the reader's reorientation does."""
    along_row, along_col = iop[:3], iop[3:]  # directions of increasing column / row index
    transpose = abs(along_row[2]) > abs(along_col[2])  # columns run head-feet
    if transpose:
        along_row, along_col = along_col, along_row
    return {
        "transpose": bool(transpose),
        "flip_rows": bool(along_col[2] > 0),
        "flip_cols": bool(along_row[1] < 0),
    }


def _orientation(iop: np.ndarray, *, transpose: bool, flip_rows: bool, flip_cols: bool) -> tuple[str, str]:
    """PatientOrientation letters (dominant axis) of the display's column and row directions."""
    along_row, along_col = iop[:3], iop[3:]
    if transpose:
        along_row, along_col = along_col, along_row
    along_row = -along_row if flip_cols else along_row
    along_col = -along_col if flip_rows else along_col
    return _letter(along_row), _letter(along_col)


def _letter(direction: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return ("RL", "AP", "FH")[axis][int(direction[axis] > 0)]


def _normal(iop: np.ndarray) -> np.ndarray | None:
    normal = np.cross(iop[:3], iop[3:])
    return normal / np.linalg.norm(normal) if np.linalg.norm(normal) >= 0.5 else None


def _plane(iop: np.ndarray) -> str:
    normal = np.cross(iop[:3], iop[3:])
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _vector(value, length: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (length,) and np.isfinite(out).all() else None


def _int_or_zero(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _check_matches_reader(image: SourceImage, source: Path, slice_index: int | None) -> None:
    """Raise InputError unless the re-laid-out source pixels are the analysed slice."""
    analysed = read_sagittal(source, slice_index=slice_index).pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            stored = pydicom.dcmread(image.path).pixel_array
        except Exception as exc:
            raise InputError(f"{image.path}: cannot decode DICOM pixel data ({type(exc).__name__})") from None
    if stored.ndim == 3:  # colour: compare luma-like mean
        stored = stored.mean(axis=-1)
    candidate = image.to_display(stored.astype(np.float64))
    if candidate.shape != analysed.shape or not _similar(candidate, analysed.astype(np.float64)):
        raise InputError(f"{source}: cannot map the analysed slice back onto a stored DICOM image")


def _similar(a: np.ndarray, b: np.ndarray) -> bool:
    if a.std() == 0 or b.std() == 0:
        return bool(a.std() == b.std())
    return abs(float(np.corrcoef(a.ravel(), b.ravel())[0, 1])) >= MIN_CORRELATION
