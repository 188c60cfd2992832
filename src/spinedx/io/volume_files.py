"""Checks on a NIfTI or MetaImage file before SimpleITK decodes it.

ITK reads a truncated file (``.nii``, ``.nii.gz``, MetaImage data) by filling the missing voxels
with zeros, follows a MetaImage ``ElementDataFile`` wherever it points, and reports a missing
data file as the header's "No such file or directory". :func:`check_volume_file` runs first and
turns each of these into one line naming the file and the problem:

* the declared size is beyond the voxel or pixel budget (:mod:`spinedx.io.limits`),
* a MetaImage data file resolves outside the header's folder, is missing, or is shorter than
  the header declares (``DimSize`` x components x bytes per ``ElementType``),
* NIfTI voxel data ends before ``vox_offset`` + the declared voxels; a gzip stream that is
  truncated or corrupt.

Only headers are parsed (by SimpleITK's ``ReadImageInformation``); a NIfTI file is streamed
once in blocks (decompressed when gzip) to count its bytes and its NaN/infinite float voxels,
which ITK would silently read as 0; it is never held in memory whole.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from spinedx.errors import InputError
from spinedx.io.limits import check_image_size, check_volume_size
from spinedx.io.paths import inside

METAIMAGE_SUFFIXES = (".mha", ".mhd")
_BLOCK = 1 << 20


def read_header(path: Path):
    """A SimpleITK ``ImageFileReader`` with ``path``'s header read (no voxels decoded).

    Raises RuntimeError (SimpleITK's) when the header cannot be read.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def check_volume_file(path: Path, reader, shown: Path | None = None) -> list[str]:
    """Raise InputError unless the file behind ``reader`` (header already read) is whole and in budget.

    ``path`` is the file read; ``shown`` (default ``path``) is the user's file, named in messages.
    Returns warning sentences: ITK reads NaN and infinite NIfTI voxels as 0, so their share is
    counted here, while the file is scanned for its length anyway.
    """
    shown = shown or path
    size = list(reader.GetSize())
    if len(size) == 2:
        check_image_size(shown, size[0], size[1])
    else:
        check_volume_size(shown, size)
    component = _component_dtype(reader)
    n_values = math.prod(size) * reader.GetNumberOfComponents()
    data_bytes = n_values * component.itemsize
    name = path.name.lower()
    if name.endswith(METAIMAGE_SUFFIXES):
        _check_metaimage_data(path, shown, data_bytes)
        return []
    if not name.endswith((".nii", ".nii.gz")):
        return []
    offset = int(float(reader.GetMetaData("vox_offset"))) if reader.HasMetaDataKey("vox_offset") else 352
    scan = _NiftiScan(offset, n_values, component if component.kind == "f" else None)
    _stream(path, shown, scan.feed)
    _check_length(shown, scan.length, offset + data_bytes, "voxel data")
    if not scan.non_finite:
        return []
    return [
        f"{scan.non_finite / n_values:.1%} of the voxels ({scan.non_finite:,}) are NaN or infinite; "
        "they are read as 0"
    ]


def metaimage_data_file(path: Path) -> Path | None:
    """The data file a MetaImage header names, resolved next to the header; None for LOCAL (in the
    header's own file). InputError for a data file outside the header's folder, a missing one, or a
    file list or pattern (a file per slice, not supported)."""
    value = _metaimage_field(path, "elementdatafile")
    if value is None or value.upper() == "LOCAL":
        return None
    where = f"{path}: ElementDataFile"
    if value.upper() == "LIST" or re.search(r"%|\s\d+\s+\d+", value):
        raise InputError(
            f"{where} '{value}' names a file per slice, which is not supported; use one data file"
        )
    data = inside(path.parent, value, where, what="data file")
    if not data.is_file():
        raise InputError(f"{where}: the data file {data} is missing")
    return data


def _check_metaimage_data(path: Path, shown: Path, data_bytes: int) -> None:
    if (_metaimage_field(path, "compresseddata") or "false").lower() == "true":
        return  # the compressed size is not declared reliably; ITK reports corrupt streams itself
    data = metaimage_data_file(shown)  # the user's header: a patched copy names its data absolutely
    if data is None:
        header = metaimage_header(path)
        offset = header[1] if header else 0
        _check_length(shown, path.stat().st_size, offset + data_bytes, "voxel data after the header")
    else:
        _check_length(data, data.stat().st_size, data_bytes, f"data file of {shown}")


def _metaimage_field(path: Path, key: str) -> str | None:
    header = metaimage_header(path)
    for name, value in header[0] if header else []:
        if name.lower() == key:
            return value
    return None


def metaimage_header(path: Path) -> tuple[list[tuple[str, str]], int] | None:
    """(key, value) pairs of a MetaImage header and the byte offset just past it; None if unreadable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return None
    pairs: list[tuple[str, str]] = []
    offset = 0
    for line in head.splitlines(keepends=True):
        offset += len(line)
        text = line.decode("latin-1").strip()
        if "=" not in text:
            if text:
                return None
            continue
        key, value = (part.strip() for part in text.split("=", 1))
        pairs.append((key, value))
        if key.lower() == "elementdatafile":
            return pairs, offset
    return None


def _component_dtype(reader) -> np.dtype:
    """The numpy type of one voxel component, as SimpleITK maps the declared pixel type."""
    import SimpleITK as sitk

    # A 1x1 image of the declared pixel type: SimpleITK knows its array type, no table to keep.
    probe = sitk.Image([1, 1], reader.GetPixelID())
    return sitk.GetArrayViewFromImage(probe).dtype


class _NiftiScan:
    """Fed the file's bytes in order: counts them and the non-finite float voxels after ``offset``."""

    def __init__(self, offset: int, n_values: int, dtype: np.dtype | None):
        self.offset, self.remaining, self.dtype = offset, n_values, dtype
        self.length = self.non_finite = 0
        self._pending = b""
        self._order = "<"

    def feed(self, block: bytes) -> None:
        if self.length == 0 and len(block) >= 4:  # sizeof_hdr is 348 (NIfTI-1) or 540 (NIfTI-2)
            self._order = "<" if struct.unpack("<i", block[:4])[0] in (348, 540) else ">"
        start = max(self.offset - self.length, 0)
        self.length += len(block)
        if self.dtype is None or self.remaining <= 0 or start >= len(block):
            return
        data = self._pending + block[start:]
        usable = min(len(data) // self.dtype.itemsize, self.remaining)
        values = np.frombuffer(data, dtype=self.dtype.newbyteorder(self._order), count=usable)
        self.non_finite += usable - int(np.count_nonzero(np.isfinite(values)))
        self.remaining -= usable
        self._pending = data[usable * self.dtype.itemsize :]


def _stream(path: Path, shown: Path, feed) -> None:
    """Pass ``path``'s bytes (decompressed when gzip) to ``feed`` in blocks; InputError for a
    truncated or corrupt gzip stream."""
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                feed(block)
        return
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while block := stream.read(_BLOCK):
                total += len(block)
                feed(block)
    except EOFError:
        raise InputError(
            f"{shown}: compressed file is truncated (the gzip stream ends after {total:,} bytes)"
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(f"{shown}: compressed file is corrupt ({exc})") from None


def _check_length(shown: Path, actual: int, expected: int, what: str) -> None:
    if actual < expected:
        raise InputError(
            f"{shown}: {what} is truncated: {actual:,} bytes where the header declares {expected:,}"
        )
