"""Read a spine MR volume (or a 2-D slice) as a display-ready mid-sagittal image.

:func:`read_sagittal` returns a :class:`SagittalSlice` laid out like the spider-sagittal PNGs:
**cranial up, anterior left**, grey values ``float32`` in ``[0, 1]``.
:func:`read_sagittal_stack` returns the ``n`` most central sagittal slices of a volume.

Inputs (dispatch on what ``path`` is):

folder
    One DICOM series. Files with a ``.dcm``/``.dicom``/``.ima`` suffix, the ``DICM`` marker
    or no suffix are read (others, e.g. ``notes.txt``, are ignored; subfolders are not
    searched). With several series (SeriesInstanceUID) the one with most images is used
    and a warning says so. Slices are ordered along the slice normal by
    ImagePositionPatient; ImageOrientationPatient, PixelSpacing and the positions give the
    geometry. A file that claims to be DICOM but cannot be read or decoded, images of
    different sizes or orientations, or two images at one position raise
    :class:`~spinedx.errors.InputError`.
``.dcm`` file
    A single-frame image is read by :func:`spinedx.io.images.read_image` (Modality LUT, VOI
    window, MONOCHROME1 inversion) and, if ImageOrientationPatient says it is sagittal,
    flipped/transposed to cranial-up/anterior-left. A multi-frame (enhanced) file is a
    volume whose geometry comes from its functional groups.
``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``
    Read with SimpleITK.
anything else (``.png``, ``.jpg``, ...)
    A 2-D image read by :func:`~spinedx.io.images.read_image`, returned as stored
    (``pixel_spacing_mm`` None).

Volumes are reoriented with SimpleITK's ``DICOMOrient`` (permutes and flips axes only, no
resampling) so that the left-right axis (found from the direction cosines) is the slice
axis and each slice has rows running cranial -> caudal and columns anterior -> posterior.
An input acquired in another plane (slices stacked along an axis other than left-right)
still gives the sagittal reformat, with a warning naming its coarse resolution. A volume
whose header has no orientation, or a degenerate one, is read with the identity direction
(DICOM series without geometry: sagittal images as stored) and a warning
``"orientation missing; assumed ..."``.

Volume intensities are normalised per returned slice (jointly for a stack) by the 0.5 and
99.5 percentiles to ``[0, 1]``, which copes with T1, T2 and T2-SPACE from any scanner; a
constant image gives zeros and a warning.

``slice_index`` is the voxel index along the input's left-right axis *as stored*; the
default is the middle one (``n_slices // 2``). Patient identifiers are never read into
messages or warnings.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import tempfile
import warnings as _warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinedx.errors import InputError
from spinedx.io.images import (
    _LUMA,
    DICOMDIR_REASON,
    _check_decoder,
    _ensure_transfer_syntax,
    _has_dicm_marker,
    _int_or,
    _pixel_spacing,
    _reason,
    is_dicom_file,
    is_dicomdir,
    read_image,
)
from spinedx.io.limits import MAX_VOXELS_ENV, MIN_SPINE_SIDE, check_volume_size, max_voxels
from spinedx.io.mr_weighting import mr_weighting
from spinedx.io.volume_files import (
    METAIMAGE_SUFFIXES,
    check_volume_file,
    metaimage_data_file,
    metaimage_header,
    read_header,
)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd")
SERIES_FILE_SUFFIXES = (".dcm", ".dicom", ".ima")
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
DISPLAY_ORIENTATION = "PIL"
"""DICOMOrient code of the reoriented volume: axis 0 (columns) toward posterior, axis 1
(rows) toward inferior, axis 2 (slices) toward the patient's left."""
OBLIQUE_WARNING_DEGREES = 15.0

_ASSUMED_IDENTITY = (
    "orientation missing; assumed identity direction (LPS: columns toward the patient's left, "
    "rows toward posterior, slices toward superior)"
)
_ASSUMED_SAGITTAL = (
    "orientation missing (no usable ImagePositionPatient/ImageOrientationPatient); assumed "
    "sagittal images stored cranial-up and anterior-left, ordered by InstanceNumber"
)
_AXIS_NAMES = {"L": "left-right", "R": "left-right", "A": "antero-posterior", "P": "antero-posterior"}
_AXIS_NAMES.update({"S": "cranio-caudal", "I": "cranio-caudal"})
_PLANES = {"left-right": "sagittal", "antero-posterior": "coronal", "cranio-caudal": "axial"}


@dataclass
class SagittalSlice:
    """One sagittal image, display-ready."""

    pixels: np.ndarray
    """2-D float32 in [0, 1], cranial up, anterior left (display orientation of spider-sagittal)."""
    path: Path
    """The input file or series folder."""
    pixel_spacing_mm: tuple[float, float] | None
    """(row, col) spacing of ``pixels`` in mm; None if unknown."""
    slice_index: int | None
    """Index of this slice along the input's left-right axis as stored (None for 2-D inputs)."""
    n_slices: int | None
    """Number of slices along the left-right axis (None for 2-D inputs)."""
    modality: str | None
    orientation: str | None
    """The input's orientation code as read (DICOMOrient style, e.g. "LPS", "PIL"); None for 2-D."""
    warnings: list[str] = field(default_factory=list)
    weighting: str | None = None
    """"T1" or "T2" (:func:`spinedx.io.mr_weighting.mr_weighting`), None when unknown."""

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def read_sagittal(
    path: str | Path, *, slice_index: int | None = None, min_side: int | None = None
) -> SagittalSlice:
    """Read ``path`` and return its mid-sagittal slice (or slice ``slice_index``); see module doc.

    ``min_side`` (e.g. :data:`~spinedx.io.limits.MIN_SPINE_SIDE` before analysis) refuses a slice
    with fewer rows or columns, see :func:`check_spine_geometry`.
    """
    path = Path(path)
    loaded = _load(path)
    if isinstance(loaded, SagittalSlice):
        if slice_index not in (None, 0):
            raise InputError(f"{path}: slice {slice_index} requested but a 2-D image has only slice 0")
        result = loaded
    else:
        sagittal = _Sagittal.from_volume(loaded)
        index = sagittal.n // 2 if slice_index is None else int(slice_index)
        if not 0 <= index < sagittal.n:
            raise InputError(
                f"{path}: slice {slice_index} requested but the volume has {sagittal.n} sagittal slices "
                f"(0..{sagittal.n - 1})"
            )
        result = sagittal.slices([index], [])[0]
    if min_side is not None:
        check_spine_geometry(result, min_side)
    result.weighting = mr_weighting(path)
    return result


def check_spine_geometry(image: SagittalSlice, min_side: int = MIN_SPINE_SIDE) -> None:
    """InputError naming the file when ``image`` has fewer than ``min_side`` rows or columns.

    Run before any model: such a slice cannot hold a lumbar spine, and the models' own checks
    would only name internal boxes. A volume's message names the anatomical axis that is short.
    """
    rows, cols = image.pixels.shape
    if rows >= min_side and cols >= min_side:
        return
    if image.n_slices is None:
        raise InputError(
            f"{image.path}: image is {cols}x{rows} pixels (width x height); a spine slice needs at "
            f"least {min_side} rows and {min_side} columns"
        )
    short = [
        f"{n} along the {axis} axis"
        for axis, n in (("cranio-caudal", rows), ("antero-posterior", cols))
        if n < min_side
    ]
    raise InputError(
        f"{image.path}: volume has only {' and '.join(short)} (voxels); a spine needs at least "
        f"{min_side} along each"
    )


def read_sagittal_stack(path: str | Path, n: int = 3) -> list[SagittalSlice]:
    """The ``n`` most central sagittal slices of ``path``, ordered from patient right to left.

    They are normalised jointly (one intensity scale for the stack). When the input has fewer
    than ``n`` slices (a 2-D image has one) the outermost ones are repeated and a warning says so.
    """
    path = Path(path)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"{path}: number of sagittal slices must be a positive integer, not {n!r}")
    loaded = _load(path)
    weighting = mr_weighting(path)
    if isinstance(loaded, SagittalSlice):
        extra = [f"only 1 sagittal slice available (2-D image); repeated to make {n}"] if n > 1 else []
        return [
            SagittalSlice(
                pixels=loaded.pixels.copy(),
                path=loaded.path,
                pixel_spacing_mm=loaded.pixel_spacing_mm,
                slice_index=loaded.slice_index,
                n_slices=loaded.n_slices,
                modality=loaded.modality,
                orientation=loaded.orientation,
                warnings=[*loaded.warnings, *extra],
                weighting=weighting,
            )
            for _ in range(n)
        ]
    sagittal = _Sagittal.from_volume(loaded)
    start = sagittal.n // 2 - n // 2
    stored = sorted((min(max(start + i, 0), sagittal.n - 1) for i in range(n)), key=sagittal.to_display)
    extra = []
    if n > sagittal.n:
        extra.append(f"only {sagittal.n} sagittal slices available; outermost repeated to make {n}")
    stack = sagittal.slices(stored, extra)
    for image in stack:
        image.weighting = weighting
    return stack


# --------------------------------------------------------------------------- dispatch


@dataclass
class _Volume:
    image: object  # SimpleITK.Image, 3-D scalar
    path: Path
    modality: str | None
    warnings: list[str]
    acquisition_axis: int | None
    """Image axis along which the slices were acquired; None when unknown (e.g. isotropic 3-D)."""
    invert: bool = False


def _load(path: Path) -> _Volume | SagittalSlice:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    name = path.name.lower()
    if name.endswith(VOLUME_SUFFIXES):
        return _read_volume_file(path)
    if is_dicom_file(path):
        return _read_dicom_file(path)
    image = read_image(path)
    return SagittalSlice(
        pixels=image.pixels,
        path=path,
        pixel_spacing_mm=image.pixel_spacing_mm,
        slice_index=None,
        n_slices=None,
        modality=image.modality,
        orientation=None,
        warnings=[],
    )


# --------------------------------------------------------------------------- sagittal extraction


@dataclass
class _Sagittal:
    """A volume reoriented to DISPLAY_ORIENTATION, with the map back to stored indices."""

    volume: _Volume
    array: np.ndarray  # (left-right, rows = cranio-caudal, cols = antero-posterior), float
    spacing: tuple[float, float]  # (row, col) mm
    n: int
    toward_left: bool  # stored left-right axis increases toward the patient's left
    orientation: str
    warnings: list[str]

    @classmethod
    def from_volume(cls, volume: _Volume) -> _Sagittal:
        import SimpleITK as sitk

        image = volume.image
        notes = list(volume.warnings)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction.ravel().tolist())
        lr_axis = next(i for i, letter in enumerate(code) if letter in "LR")
        spacing = image.GetSpacing()

        # Axes that are not parallel to an anatomical axis: slices are taken along the nearest.
        cosines = np.clip(np.abs(direction).max(axis=0), 0.0, 1.0)
        oblique = float(np.degrees(np.arccos(cosines.min())))
        if oblique > OBLIQUE_WARNING_DEGREES:
            notes.append(
                f"volume axes are oblique by up to {oblique:.0f} degrees to the anatomical axes; "
                "slices are taken along the nearest volume axis without resampling"
            )

        acquired = volume.acquisition_axis
        if acquired is not None and acquired != lr_axis:
            along = _AXIS_NAMES[code[acquired]]
            notes.append(
                f"reformatted from {_PLANES[along]} acquisition; resolution along {along} is "
                f"{spacing[acquired]:.3g} mm"
            )

        oriented = sitk.DICOMOrient(image, DISPLAY_ORIENTATION)
        check = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(oriented.GetDirection())
        if check != DISPLAY_ORIENTATION:  # pragma: no cover - SimpleITK contract
            raise RuntimeError(f"DICOMOrient gave {check}, expected {DISPLAY_ORIENTATION}")
        array = sitk.GetArrayFromImage(oriented)  # (L, I, P)
        if array.shape[1] < 2 or array.shape[2] < 2:
            raise InputError(
                f"{volume.path}: a sagittal slice of this {'x'.join(map(str, image.GetSize()))} volume "
                f"would be {array.shape[1]}x{array.shape[2]} pixels; it has too few voxels along "
                "the cranio-caudal or antero-posterior axis"
            )
        out_spacing = oriented.GetSpacing()
        return cls(
            volume=volume,
            array=array,
            spacing=(float(out_spacing[1]), float(out_spacing[0])),
            n=int(array.shape[0]),
            toward_left=code[lr_axis] == "L",
            orientation=code,
            warnings=notes,
        )

    def to_display(self, index: int) -> int:
        """Stored left-right index <-> index in the right-to-left reoriented array (an involution)."""
        return index if self.toward_left else self.n - 1 - index

    def slices(self, stored_indices: list[int], extra: list[str]) -> list[SagittalSlice]:
        notes = [*self.warnings, *extra]
        block = np.stack([self.array[self.to_display(i)] for i in stored_indices])
        pixels = _normalise(block, notes)
        if self.volume.invert and pixels.any():
            pixels = 1.0 - pixels
        return [
            SagittalSlice(
                pixels=np.ascontiguousarray(pixels[i], dtype=np.float32),
                path=self.volume.path,
                pixel_spacing_mm=self.spacing,
                slice_index=int(index),
                n_slices=self.n,
                modality=self.volume.modality,
                orientation=self.orientation,
                warnings=list(notes),
            )
            for i, index in enumerate(stored_indices)
        ]


def _normalise(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Robust 0.5-99.5 percentile stretch to [0, 1]; a constant image gives zeros (+ warning).

    NaN and infinite values are ignored by the stretch and set to 0 (the lowest intensity); a
    warning in ``notes`` gives their share.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        notes.append("image has no finite values; returned as zeros")
        return np.zeros(values.shape, dtype=np.float32)
    if not finite.all():
        bad = values.size - int(np.count_nonzero(finite))
        notes.append(
            f"{bad / values.size:.1%} of the image values ({bad}) are NaN or infinite; "
            "they are shown as the lowest intensity"
        )
    good = values[finite]
    low, high = np.percentile(good, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:  # a small bright object on a flat background: fall back to min-max
        low, high = float(good.min()), float(good.max())
    if high <= low:
        notes.append(f"constant image (every value is {low:g}); returned as zeros")
        return np.zeros(values.shape, dtype=np.float32)
    out = np.clip((values - low) / (high - low), 0.0, 1.0)
    out[~finite] = 0.0
    return out.astype(np.float32)


# --------------------------------------------------------------------------- NIfTI / MetaImage


def _read_volume_file(path: Path) -> _Volume | SagittalSlice:
    import SimpleITK as sitk

    notes: list[str] = []
    if path.name.lower().endswith(METAIMAGE_SUFFIXES):
        metaimage_data_file(path)  # before ITK follows the header's ElementDataFile anywhere
    missing = _orientation_missing(path)
    try:
        image = _read_checked(path, notes)
    except RuntimeError as exc:
        message = _itk_reason(exc)
        if "direction" not in message.lower() and "orthonormal" not in message.lower():
            raise InputError(f"{path}: cannot read volume ({message})") from None
        image = _read_ignoring_orientation(path, notes)
        notes.append(_ASSUMED_IDENTITY + " (the header's direction matrix is degenerate)")
        missing = False
    if missing:
        notes.append(_ASSUMED_IDENTITY)

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "expected a grey-scale volume"
        )
    dimension = image.GetDimension()
    if dimension == 4:
        size = list(image.GetSize())
        if size[3] > 1:
            notes.append(f"4-D volume with {size[3]} volumes; using the first")
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
        dimension = 3
    if dimension == 2:
        spacing = image.GetSpacing()
        pixels = _normalise(sitk.GetArrayFromImage(image), notes)
        return SagittalSlice(
            pixels=pixels,
            path=path,
            pixel_spacing_mm=(float(spacing[1]), float(spacing[0])),
            slice_index=None,
            n_slices=None,
            modality=_metaimage_modality(path),
            orientation=None,
            warnings=notes,
        )
    if dimension != 3:
        raise InputError(f"{path}: {dimension}-D image; expected a 3-D volume (or a 2-D slice)")
    try:
        image = sitk.Cast(image, sitk.sitkFloat32)
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot use voxel type {image.GetPixelIDTypeAsString()} ({_itk_reason(exc)})"
        ) from None
    return _Volume(
        image=image,
        path=path,
        modality=_metaimage_modality(path),
        warnings=notes,
        acquisition_axis=_acquisition_axis(image.GetSpacing()),
    )


def _read_checked(target: Path, notes: list[str], shown: Path | None = None):
    """``sitk.ReadImage(target)`` after :func:`check_volume_file` (budget, truncation, data file),
    whose warnings are added to ``notes``.

    RuntimeError (SimpleITK's) when the header cannot be read; ``shown`` names the user's file
    in messages when ``target`` is a patched copy.
    """
    import SimpleITK as sitk

    notes.extend(check_volume_file(target, read_header(target), shown))
    return sitk.ReadImage(str(target))


def _acquisition_axis(spacing) -> int | None:
    """The slice axis of a volume file: the one with clearly the coarsest spacing (axis 2 on a tie).

    None for a (nearly) isotropic volume: a 3-D acquisition can be reformatted in any plane.
    """
    spacing = [float(s) for s in spacing]
    if max(spacing) < 1.25 * min(spacing):
        return None
    coarsest = [i for i, s in enumerate(spacing) if s >= max(spacing) / 1.05]
    if len(coarsest) == 1:
        return coarsest[0]
    return 2 if 2 in coarsest else None


def _itk_reason(exc: BaseException) -> str:
    """The message of an ITK/SimpleITK exception without its source-file and object prefixes."""
    text = str(exc)
    for marker in ("ITK ERROR:", "sitk::ERROR:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    text = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):", "", text)
    if "Unable to determine ImageIO reader" in text:
        text = "not a readable NIfTI or MetaImage file"
    return _reason(RuntimeError(text))


def _orientation_missing(path: Path) -> bool:
    """True when the header has no orientation at all (NIfTI qform/sform codes 0, no MetaImage matrix)."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        header = metaimage_header(path)
        if header is None:
            return False
        keys = {key.lower() for key, _ in header[0]}
        return not keys & {"transformmatrix", "rotation", "orientation"}
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False  # the full read reports (or works around) the problem
    codes = []
    for key in ("qform_code", "sform_code"):
        value = reader.GetMetaData(key) if reader.HasMetaDataKey(key) else ""
        codes.append(_int_or(value.strip(), None))
    return codes == [0, 0]


def _metaimage_modality(path: Path) -> str | None:
    if not path.name.lower().endswith((".mha", ".mhd")):
        return None
    header = metaimage_header(path)
    for key, value in header[0] if header else []:
        if key.lower() == "modality":
            code = value.upper().removeprefix("MET_MOD_")
            return code if code and code not in ("OTHER", "UNKNOWN") else None
    return None


def _read_ignoring_orientation(path: Path, notes: list[str]):
    """Read a NIfTI-1 or MetaImage file whose direction matrix ITK refuses, as identity."""

    name = path.name.lower()
    with tempfile.TemporaryDirectory(prefix="spinedx-volume-") as tmp:
        if name.endswith((".nii", ".nii.gz")):
            data = _bounded_bytes(path)
            endian = next(
                (e for e in "<>" if len(data) >= 348 and struct.unpack(e + "i", data[:4])[0] == 348), None
            )
            if endian is None:
                raise InputError(
                    f"{path}: cannot read volume (degenerate orientation in a non-NIfTI-1 header)"
                )
            # qform_code and sform_code (int16 at bytes 252 and 254) = 0: ITK then uses identity.
            patched = data[:252] + struct.pack(endian + "hh", 0, 0) + data[256:]
            target = Path(tmp) / "volume.nii"
            target.write_bytes(patched)
        else:
            header = metaimage_header(path)
            if header is None:
                raise InputError(f"{path}: cannot read volume (unreadable MetaImage header)")
            pairs, offset = header
            lines = []
            for key, value in pairs:
                if key.lower() in ("transformmatrix", "rotation", "orientation"):
                    continue
                if key.lower() == "elementdatafile" and value.upper() not in ("LOCAL", "LIST"):
                    if re.search(r"%|\s\d+\s", value):
                        raise InputError(
                            f"{path}: cannot read volume (degenerate orientation and a file pattern)"
                        )
                    value = str((path.parent / value).resolve())
                elif key.lower() == "elementdatafile" and value.upper() == "LIST":
                    raise InputError(f"{path}: cannot read volume (degenerate orientation and a file list)")
                lines.append(f"{key} = {value}\n")
            target = Path(tmp) / ("volume.mha" if name.endswith(".mha") else "volume.mhd")
            with open(path, "rb") as handle:
                handle.seek(offset)
                rest = handle.read()
            target.write_bytes("".join(lines).encode("latin-1") + rest)
        try:
            image = _read_checked(target, notes, shown=path)
        except RuntimeError as exc:
            raise InputError(f"{path}: cannot read volume ({_itk_reason(exc)})") from None
        return image


def _bounded_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of a NIfTI file, refusing more than the voxel budget could need."""
    limit = 352 + 8 * max_voxels()  # header + the budget at 8 bytes a voxel
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read volume ({_reason(exc)})") from None
    if len(data) > limit:
        raise InputError(f"{path}: volume is larger than {MAX_VOXELS_ENV} allows; not decoded")
    return data


# --------------------------------------------------------------------------- DICOM


@dataclass
class _Plane:
    """One image of a DICOM volume (a file of a series, or a frame of a multi-frame file)."""

    label: str
    """Where it came from, for messages: the file, or 'file frame N'."""
    rows: int
    cols: int
    iop: np.ndarray | None
    ipp: np.ndarray | None
    spacing: tuple[float, float] | None
    order: tuple
    load: Callable[[], np.ndarray]
    thickness: float | None = None


def _vector(value, length: int) -> np.ndarray | None:
    try:
        if value is None or len(value) != length:
            return None
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out).all() else None


def _positive(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _dcmread(path: Path, *, claims: bool):
    """Read a DICOM header (pixel data deferred); None for a non-DICOM file that made no claim."""
    import pydicom

    marker = _has_dicm_marker(path)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=not marker, defer_size="4 KB")
        except Exception as exc:
            if not claims:
                return None
            raise InputError(
                f"{path}: cannot read DICOM file ({type(exc).__name__}: {_reason(exc)})"
            ) from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) or "Rows" not in ds:
        if not claims:
            return None
        if is_dicomdir(ds):
            raise InputError(f"{path}: {DICOMDIR_REASON}")
        raise InputError(f"{path}: not a DICOM image (no pixel data; the file may be corrupt or truncated)")
    return ds


def _decode(ds, path: Path) -> np.ndarray:
    _ensure_transfer_syntax(ds, path)
    _check_decoder(ds, path)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"{path}: cannot decode DICOM pixel data ({type(exc).__name__}: {_reason(exc)})"
        ) from None


def _grey(raw: np.ndarray, ds, path: Path, slope_intercept: tuple[float, float] | None = None) -> np.ndarray:
    """Modality values of one frame (colour -> luma); ``slope_intercept`` overrides the data set's."""
    from pydicom.pixels import apply_modality_lut

    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        return raw[..., :3].astype(np.float64) @ _LUMA
    if raw.ndim != 2:
        raise InputError(f"{path}: unexpected DICOM pixel array shape {raw.shape}")
    if slope_intercept is not None:
        return raw.astype(np.float64) * slope_intercept[0] + slope_intercept[1]
    try:
        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    except Exception as exc:
        raise InputError(f"{path}: cannot apply the DICOM Modality LUT ({_reason(exc)})") from None


def _modality(ds) -> str | None:
    value = ds.get("Modality")
    text = str(value).strip() if value is not None else ""
    return text or None


def _read_dicom_series(folder: Path) -> _Volume:
    candidates = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith(".") or entry.name.upper() == "DICOMDIR":
            continue
        suffix = entry.suffix.lower()
        claims = suffix in SERIES_FILE_SUFFIXES or _has_dicm_marker(entry)
        if claims or suffix == "" or not re.fullmatch(r"\.[a-z]+", suffix):  # 'IM0001', '1.2.3.4'
            candidates.append((entry, claims))
    series: dict[str, list] = {}
    for entry, claims in candidates:
        ds = _dcmread(entry, claims=claims)
        if ds is not None:
            series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((entry, ds))
    if not series:
        raise InputError(
            f"{folder}: no DICOM images in this folder (subfolders are not searched; "
            "expected .dcm files or files with the DICM marker)"
        )
    notes: list[str] = []
    chosen = max(series.values(), key=len)
    if len(series) > 1:
        notes.append(
            f"folder holds {len(series)} DICOM series; using the one with {len(chosen)} images "
            f"({sum(map(len, series.values())) - len(chosen)} other images ignored)"
        )

    planes = []
    for entry, ds in chosen:
        if _int_or(ds.get("NumberOfFrames"), 1) > 1:
            raise InputError(f"{entry}: multi-frame file in a series folder; read the file on its own")

        def load(entry=entry, ds=ds) -> np.ndarray:
            return _grey(_decode(ds, entry), ds, entry)

        planes.append(
            _Plane(
                label=str(entry),
                rows=_int_or(ds.get("Rows"), 0),
                cols=_int_or(ds.get("Columns"), 0),
                iop=_vector(ds.get("ImageOrientationPatient"), 6),
                ipp=_vector(ds.get("ImagePositionPatient"), 3),
                spacing=_pixel_spacing(ds),
                order=(_int_or(ds.get("InstanceNumber"), 0), entry.name),
                load=load,
                thickness=_positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness")),
            )
        )
    sizes = {(p.rows, p.cols) for p in planes}
    if len(sizes) > 1:
        common = max(sizes, key=lambda s: sum((p.rows, p.cols) == s for p in planes))
        odd = next(p for p in planes if (p.rows, p.cols) != common)
        raise InputError(
            f"{folder}: DICOM series has images of different sizes "
            f"({', '.join(f'{c}x{r}' for r, c in sorted(sizes))} columns x rows; e.g. {Path(odd.label).name} "
            f"is {odd.cols}x{odd.rows}, most are {common[1]}x{common[0]}); cannot stack them into a volume"
        )
    check_volume_size(folder, (planes[0].cols, planes[0].rows, len(planes)))
    first = chosen[0][1]
    photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    return _stack(folder, planes, _modality(first), photometric == "MONOCHROME1", notes)


def _read_dicom_file(path: Path) -> _Volume | SagittalSlice:
    ds = _dcmread(path, claims=True)
    n_frames = _int_or(ds.get("NumberOfFrames"), 1)
    if n_frames <= 1:
        return _read_dicom_2d(path, ds)

    check_volume_size(path, (_int_or(ds.get("Columns"), 0), _int_or(ds.get("Rows"), 0), n_frames))
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != n_frames:
        raise InputError(
            f"{path}: {len(per_frame)} per-frame functional groups for {n_frames} frames (header is inconsistent)"
        )
    frames: dict[str, np.ndarray] = {}

    def all_frames() -> np.ndarray:
        if "pixels" not in frames:
            raw = _decode(ds, path)
            if raw.ndim < 3 or raw.shape[0] != n_frames:
                raise InputError(
                    f"{path}: unexpected DICOM pixel array shape {raw.shape} for {n_frames} frames"
                )
            frames["pixels"] = raw
        return frames["pixels"]

    rows, cols = _int_or(ds.get("Rows"), 0), _int_or(ds.get("Columns"), 0)
    top_spacing = _pixel_spacing(ds)
    planes = []
    for i in range(n_frames):
        group = per_frame[i] if per_frame else None

        def find(sequence: str, keyword: str, group=group):
            for source in (group, shared):
                item = _first_item(source.get(sequence)) if source is not None else None
                if item is not None and keyword in item:
                    return item.get(keyword)
            return ds.get(keyword)

        spacing = _vector(find("PixelMeasuresSequence", "PixelSpacing"), 2)
        slope = _positive_or_none(find("PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float_or(find("PixelValueTransformationSequence", "RescaleIntercept"), 0.0)

        def load(i=i, slope=slope, intercept=intercept) -> np.ndarray:
            raw = all_frames()[i]
            return _grey(raw, ds, path, (slope, intercept) if slope is not None else None)

        planes.append(
            _Plane(
                label=f"{path} frame {i}",
                rows=rows,
                cols=cols,
                iop=_vector(find("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                ipp=_vector(find("PlanePositionSequence", "ImagePositionPatient"), 3),
                spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else top_spacing,
                order=(i,),
                load=load,
                thickness=_positive(find("PixelMeasuresSequence", "SpacingBetweenSlices"))
                or _positive(find("PixelMeasuresSequence", "SliceThickness")),
            )
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    return _stack(path, planes, _modality(ds), photometric == "MONOCHROME1", [])


def _first_item(sequence):
    try:
        return sequence[0] if sequence else None
    except (TypeError, IndexError):
        return None


def _positive_or_none(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out != 0 else None


def _float_or(value, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _read_dicom_2d(path: Path, ds) -> SagittalSlice:
    image = read_image(path)
    pixels, spacing, notes = image.pixels, image.pixel_spacing_mm, []
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    orientation = _first_item(shared.get("PlaneOrientationSequence")) if shared is not None else None
    iop = _vector(ds.get("ImageOrientationPatient"), 6)
    if iop is None and orientation is not None:
        iop = _vector(orientation.get("ImageOrientationPatient"), 6)
    if iop is not None and np.linalg.norm(np.cross(iop[:3], iop[3:])) > 0.5:
        pixels, spacing, notes = _orient_2d(pixels, spacing, iop)
    return SagittalSlice(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        path=path,
        pixel_spacing_mm=spacing,
        slice_index=None,
        n_slices=None,
        modality=image.modality,
        orientation=None,
        warnings=notes,
    )


def _orient_2d(pixels: np.ndarray, spacing, iop: np.ndarray):
    """Flip/transpose a single sagittal image to cranial-up, anterior-left (LPS patient axes)."""
    along_row, along_col = iop[:3], iop[3:]  # directions of increasing column / row index
    normal = np.cross(along_row, along_col)
    plane = _PLANES[_AXIS_NAMES["LPS"[int(np.argmax(np.abs(normal)))]]]
    if plane != "sagittal":
        return pixels, spacing, [f"single {plane} image, not a sagittal one; returned as stored"]
    if abs(along_row[2]) > abs(along_col[2]):  # rows run antero-posterior: transpose
        pixels = pixels.T
        spacing = (spacing[1], spacing[0]) if spacing is not None else None
        along_row, along_col = along_col, along_row
    if along_col[2] > 0:  # row index increases toward superior
        pixels = pixels[::-1, :]
    if along_row[1] < 0:  # column index increases toward anterior
        pixels = pixels[:, ::-1]
    return pixels, spacing, []


def _stack(where: Path, planes: list[_Plane], modality, invert: bool, notes: list[str]) -> _Volume:
    """Order the planes along their normal and build a SimpleITK volume with their geometry."""
    import SimpleITK as sitk

    rows, cols = planes[0].rows, planes[0].cols
    if rows < 1 or cols < 1:
        raise InputError(f"{planes[0].label}: DICOM image has no Rows/Columns")
    spacing = planes[0].spacing
    if spacing is None:
        notes.append("pixel spacing missing (PixelSpacing); assumed 1 mm")
        spacing = (1.0, 1.0)
    elif any(p.spacing is not None and not np.allclose(p.spacing, spacing, rtol=1e-3) for p in planes):
        odd = next(
            p for p in planes if p.spacing is not None and not np.allclose(p.spacing, spacing, rtol=1e-3)
        )
        raise InputError(
            f"{where}: images have different pixel spacings (e.g. {odd.label}: {odd.spacing} mm, "
            f"{planes[0].label}: {spacing} mm); cannot stack them into a volume"
        )

    geometric = all(p.iop is not None and p.ipp is not None for p in planes)
    if geometric:
        along_row = planes[0].iop[:3]
        along_col = planes[0].iop[3:]
        if np.linalg.norm(np.cross(along_row, along_col)) < 0.5:
            geometric = False
    if geometric:
        for plane in planes[1:]:
            if np.abs(plane.iop - planes[0].iop).max() > 1e-3:
                raise InputError(
                    f"{where}: images have different orientations (ImageOrientationPatient of "
                    f"{plane.label} differs from {planes[0].label}); not a single volume"
                )
        along_row = along_row / np.linalg.norm(along_row)
        along_col = along_col - along_row * float(along_col @ along_row)
        along_col = along_col / np.linalg.norm(along_col)
        normal = np.cross(along_row, along_col)
        positions = np.array([float(p.ipp @ normal) for p in planes])
        order = np.argsort(positions, kind="stable")
        planes = [planes[i] for i in order]
        positions = positions[order]
        steps = np.diff(positions)
        if len(steps) and steps.min() < 1e-3:
            i = int(np.argmin(steps))
            raise InputError(
                f"{where}: {planes[i].label} and {planes[i + 1].label} lie at the same slice position "
                "(several acquisitions, echoes or time points in one series?); not a single volume"
            )
        if len(steps):
            step = float(np.median(steps))
            if steps.max() > 1.2 * steps.min():
                notes.append(
                    f"irregular slice spacing ({steps.min():.3g}-{steps.max():.3g} mm); "
                    f"using the median {step:.3g} mm"
                )
        else:
            step = planes[0].thickness or 1.0
        origin = planes[0].ipp
    else:
        notes.append(_ASSUMED_SAGITTAL)
        planes = sorted(planes, key=lambda p: p.order)
        along_row = np.array([0.0, 1.0, 0.0])  # columns toward posterior
        along_col = np.array([0.0, 0.0, -1.0])  # rows toward inferior
        normal = np.cross(along_row, along_col)
        step = planes[0].thickness or 1.0
        origin = np.zeros(3)

    volume = np.empty((len(planes), rows, cols), dtype=np.float32)
    for i, plane in enumerate(planes):
        values = plane.load()
        if values.shape != (rows, cols):
            raise InputError(f"{plane.label}: pixel data is {values.shape}, header says {rows}x{cols}")
        volume[i] = values
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((float(spacing[1]), float(spacing[0]), float(step)))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(float(v) for v in np.column_stack([along_row, along_col, normal]).ravel()))
    return _Volume(
        image=image, path=where, modality=modality, warnings=notes, acquisition_axis=2, invert=invert
    )
