"""Read a radiograph or MR slice (PNG, JPEG or DICOM) into a display-ready grey image.

:func:`read_image` returns a :class:`LoadedImage` whose ``pixels`` is a 2-D ``float32`` array
in ``[0, 1]``, 0 = black, with the same rows and columns as the stored image (box coordinates
in annotation tables refer to this grid).

PNG / JPEG (and anything else Pillow opens)
    Colour images are converted to grey with Pillow's ITU-R 601-2 luma transform. 8-bit
    images are divided by 255, 16-bit ones by 65535; 32-bit integer and float images are
    min-max scaled. EXIF orientation is *not* applied: pixels are kept as stored, like DICOM.

DICOM (suffix ``.dcm``/``.dicom``, or any file with the ``DICM`` marker at byte 128)
    Decoded with pydicom; compressed transfer syntaxes need the matching plugin (pylibjpeg
    with pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-libjpeg for JPEG / JPEG-LS). Then:

    1. the Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence),
    2. the VOI transform: the first VOI LUT Sequence item if present, else the first Window
       Center/Width pair (with its VOI LUT Function), else a min-max stretch,
    3. ``MONOCHROME1`` is inverted so that bone is bright in every output.

    A multi-frame file yields its first frame (index 0) unless ``frame`` says otherwise:
    radiographs are single images and the annotations refer to frame 0.
    Colour DICOM (RGB, YBR, palette) is converted to grey by luma.

Every failure the user can fix raises :class:`~spinedx.errors.InputError` naming the file. An
image larger than the pixel budget (:mod:`spinedx.io.limits`) is refused from its header,
before any pixel is decoded.
Patient identifiers are never read into messages or logs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spinedx.errors import InputError
from spinedx.io.limits import check_image_size

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class LoadedImage:
    """A decoded image, ready for display or a model."""

    pixels: np.ndarray
    """2-D float32 in [0, 1], display-ready (VOI applied, MONOCHROME1 inverted)."""
    path: Path
    modality: str | None
    """DICOM Modality (e.g. "DX", "CR", "MR"); None for PNG/JPEG."""
    pixel_spacing_mm: tuple[float, float] | None
    """(row, column) spacing from PixelSpacing or ImagerPixelSpacing; None if unknown."""
    bits_stored: int | None
    """Bits per sample as stored (DICOM BitsStored, 8 or 16 for PNG/JPEG)."""

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm``/``.dicom`` suffix or a ``DICM`` marker at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path, *, frame: int = 0) -> LoadedImage:
    """Read ``path`` (PNG, JPEG or DICOM) into a :class:`LoadedImage`.

    ``frame`` selects the frame of a multi-frame DICOM (default: the first).
    Raises :class:`InputError` for a missing, unreadable or undecodable file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if is_dicom_file(path):
        return _read_dicom(path, frame)
    return _read_pil(path)


# --------------------------------------------------------------------------- PNG / JPEG


def _scale_to_unit(values: np.ndarray) -> np.ndarray:
    """Min-max stretch to [0, 1]; a constant (or all-NaN) image gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low = float(values[finite].min())
    high = float(values[finite].max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values - low) / (high - low)
    out[~finite] = 0.0
    return out.astype(np.float32)


# value / (2**bits - 1) computed in float64 and stored as float32, for every 8- and 16-bit value:
# indexing a table gives the same pixels as dividing, without a float64 copy of the image.
_UNIT_8 = (np.arange(2**8) / 255.0).astype(np.float32)
_UNIT_16 = (np.arange(2**16) / 65535.0).astype(np.float32)


def _read_pil(path: Path) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            # Pillow's decompression-bomb warning is superseded by spinedx's own pixel budget.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            check_image_size(path, *image.size)  # Image.open read the header only: nothing decoded yet
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                pixels = _UNIT_16[np.asarray(image).astype(np.uint16, copy=False)]
                bits = 16
            elif mode in ("I", "F"):
                pixels = np.clip(_scale_to_unit(np.asarray(image)), 0.0, 1.0)
                bits = 32
            else:
                grey = image if mode == "L" else image.convert("L")
                pixels = _UNIT_8[np.asarray(grey)]
                bits = 8
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot decode image ({_reason(exc)})") from None
    except Image.DecompressionBombError as exc:  # only when SPINEDX_MAX_PIXELS exceeds Pillow's hard limit
        raise InputError(f"{path}: image too large to decode ({_reason(exc)})") from None
    if pixels.ndim != 2:
        raise InputError(f"{path}: cannot decode image (unexpected shape {pixels.shape})")
    return LoadedImage(pixels=pixels, path=path, modality=None, pixel_spacing_mm=None, bits_stored=bits)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


# --------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path, frame: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_marker = _has_dicm_marker(path)
    # Only pixel-module, VOI, Modality and spacing elements are ever accessed (pydicom converts
    # values lazily), so no patient identifier can reach a message, a warning or a log line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=not has_marker)
        except InvalidDicomError as exc:
            raise InputError(f"{path}: not a DICOM file ({_reason(exc)})") from None
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise InputError(
                f"{path}: cannot read DICOM file ({type(exc).__name__}: {_reason(exc)})"
            ) from None

    pixel_keywords = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(keyword in ds for keyword in pixel_keywords):
        if is_dicomdir(ds):
            raise InputError(f"{path}: {DICOMDIR_REASON}")
        if not has_marker:
            raise InputError(f"{path}: not a DICOM image (no 'DICM' marker and no pixel data found)")
        raise InputError(
            f"{path}: DICOM file has no pixel data (element PixelData is missing; "
            "the file may be truncated or not an image)"
        )

    _ensure_transfer_syntax(ds, path)
    _check_decoder(ds, path)
    check_image_size(path, _int_or(ds.get("Columns"), 0), _int_or(ds.get("Rows"), 0))

    n_frames = _int_or(ds.get("NumberOfFrames"), 1)
    if not 0 <= frame < max(n_frames, 1):
        raise InputError(f"{path}: frame {frame} requested but the file has {n_frames} frame(s)")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if n_frames > 1:
                ds.pixel_array_options(index=frame)
            raw = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"{path}: cannot decode DICOM pixel data ({type(exc).__name__}: {_reason(exc)})"
        ) from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        pixels = _dicom_to_display(raw, ds, photometric)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: cannot apply DICOM grey-scale transforms ({type(exc).__name__}: {_reason(exc)})"
        ) from None
    if pixels.ndim != 2:
        raise InputError(f"{path}: unexpected DICOM pixel array shape {raw.shape}")

    modality = ds.get("Modality")
    return LoadedImage(
        pixels=pixels,
        path=path,
        modality=str(modality).strip() or None if modality is not None else None,
        pixel_spacing_mm=_pixel_spacing(ds),
        bits_stored=_int_or(ds.get("BitsStored"), None),
    )


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
DICOMDIR_REASON = (
    "a DICOMDIR (the index of a DICOM disc or folder), not an image; pass an image file or series folder"
)


def is_dicomdir(ds) -> bool:
    """True for a DICOMDIR data set (Media Storage Directory SOP class): an index without pixels."""
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop_class or ds.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def _has_dicm_marker(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _ensure_transfer_syntax(ds, path: Path) -> None:
    """Files without File Meta (raw data sets) get the syntax they were read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise InputError(f"{path}: DICOM file has no Transfer Syntax UID and its encoding is unknown")
    if not little:
        syntax = ExplicitVRBigEndian
    elif implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


def _check_decoder(ds, path: Path) -> None:
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"{path}: unsupported DICOM transfer syntax '{name}' ({syntax}): no decoder exists"
        ) from None
    if decoder.is_available:
        return
    missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
    raise InputError(
        f"{path}: cannot decode transfer syntax '{syntax.name}' ({syntax}): "
        f"no decoder plugin installed; install one of: {missing}"
    )


def _dicom_to_display(raw: np.ndarray, ds, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds)
        return _scale_to_unit(rgb[..., :3] @ _LUMA)
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        # RGB (YBR is converted to RGB by pydicom); samples are unsigned BitsStored-bit values.
        bits = _int_or(ds.get("BitsStored"), 8)
        grey = raw[..., :3].astype(np.float64) @ _LUMA / float(2**bits - 1)
        return np.clip(grey, 0.0, 1.0).astype(np.float32)

    values = apply_modality_lut(raw, ds)
    display = _apply_voi(values, ds)
    if display is None:
        display = _scale_to_unit(values)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return np.clip(display, 0.0, 1.0).astype(np.float32)


def _apply_voi(values: np.ndarray, ds) -> np.ndarray | None:
    """VOI LUT Sequence, else Window Center/Width, mapped to [0, 1]; None when there is none."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi, apply_windowing

    sequence = ds.get("VOILUTSequence")
    if sequence and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]:
        descriptor = [int(v) for v in sequence[0].LUTDescriptor]
        n_entries = descriptor[0] or 2**16
        first = descriptor[1]
        stored = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        out = apply_voi(stored, ds, 0).astype(np.float64)
        # The LUT's own output range maps to black..white (robust to a mis-declared bit depth).
        lut = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, 0).astype(np.float64)
        low, high = float(lut.min()), float(lut.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.float32)
        return ((out - low) / (high - low)).astype(np.float32)

    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    # Window with a plain 16-bit unsigned frame of reference so the output range is known
    # ([0, 65535]) whatever the stored bit depth, signedness or rescale of the source.
    window = Dataset()
    window.PhotometricInterpretation = "MONOCHROME2"
    window.PixelRepresentation = 0
    window.BitsStored = 16
    window.WindowCenter = center
    window.WindowWidth = width
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    window.VOILUTFunction = function
    try:
        out = apply_windowing(values.astype(np.float64), window, 0)
    except ValueError as exc:  # width < 1, unknown function: fall back to a min-max stretch
        logger.warning("ignoring unusable DICOM window (%s); using min-max instead", _reason(exc))
        return None
    return (out / 65535.0).astype(np.float32)


def _first_value(value) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, str | bytes):
            return None
        items = list(value) if hasattr(value, "__iter__") else [value]
        return float(items[0]) if items else None
    except (TypeError, ValueError):
        return None


def _pixel_spacing(ds) -> tuple[float, float] | None:
    candidates = [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures:
            candidates.append(measures[0].get("PixelSpacing"))
    for value in candidates:
        try:
            if value is None or len(value) != 2:
                continue
            row, col = float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col)
    return None


def _int_or(value, default):
    try:
        return int(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default
