"""Uploaded files into the data folder: type sniffed from content, archives unpacked safely, DICOM de-identified.

Nothing the client names becomes a path: a study's input is stored as ``input.<kind suffix>``
(or, for a zip of DICOM files, ``input/<n>.dcm``) under the study's opaque id. The type is read
from the first bytes (PNG and JPEG signatures, ``DICM`` at offset 128, a zip local header, the
NIfTI-1/2 header, gzip holding a NIfTI header, a MetaImage text header), never from the name.
Zip archives are refused when a member name is absolute or climbs out with ``..`` (zip-slip),
and limited in member count and total uncompressed size (zip bombs). The declared sizes are a
safe bound: :mod:`zipfile` never inflates more than a member's declared size (a member that holds
more fails its CRC check).
"""

from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.errors import InvalidDicomError

from spinedx.dicom.deid import deidentify_dataset
from spinedx.errors import InputError

SNIFF_BYTES = 1024
NIFTI2_HEADER_BYTES = 540
_COPY_BLOCK = 1 << 20
SUFFIXES = {
    "png": ".png",
    "jpeg": ".jpg",
    "dicom": ".dcm",
    "nifti": ".nii",
    "nifti-gz": ".nii.gz",
    "mha": ".mha",
}
METAIMAGE_KEYS = (b"objecttype", b"ndims", b"dimsize", b"elementtype", b"elementdatafile")


class UploadRejected(Exception):
    """An upload refused for a reason the client can fix; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 512 << 20
    max_archive_files: int = 2000
    max_archive_bytes: int = 2 << 30


def sniff(head: bytes) -> str | None:
    """The kind of file whose first bytes are ``head``: png, jpeg, dicom, zip, nifti, nifti-gz, mha; or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head, NIFTI2_HEADER_BYTES)
        except zlib.error:
            return None
        return "nifti-gz" if _is_nifti_header(inner) else None
    if _is_metaimage_header(head):
        return "mha"
    return None


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        return any(struct.unpack(f"{order}i", head[:4])[0] == 348 for order in "<>")
    if len(head) >= 12 and head[4:7] in (b"n+2", b"ni2"):
        return any(struct.unpack(f"{order}i", head[:4])[0] == 540 for order in "<>")
    return False


def _is_metaimage_header(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0].strip().lower()
    return any(first.replace(b" ", b"").startswith(key + b"=") for key in METAIMAGE_KEYS)


def store_upload(source: Path, study_dir: Path, *, keep_phi: bool, limits: UploadLimits) -> tuple[str, Path]:
    """Move the received file ``source`` into ``study_dir`` as the study's input; returns (kind, input path).

    Raises :class:`UploadRejected` for an unknown type (415), a refused archive (400, or 413 beyond
    its limits) or a DICOM file that cannot be read or de-identified (400).
    """
    with source.open("rb") as handle:
        kind = sniff(handle.read(SNIFF_BYTES))
    if kind is None:
        raise UploadRejected(
            415,
            "unsupported file type: send PNG, JPEG, DICOM, a zip of DICOM files, NIfTI or MetaImage (.mha)",
        )
    if kind == "zip":
        folder = study_dir / "input"
        folder.mkdir(parents=True)
        _unpack_dicom_zip(source, folder, keep_phi=keep_phi, limits=limits)
        return kind, folder
    target = study_dir / f"input{SUFFIXES[kind]}"
    if kind == "dicom":
        _store_dicom(source, target, keep_phi=keep_phi)
    else:
        if kind == "mha":
            _check_metaimage_is_local(source)
        shutil.move(source, target)
    return kind, target


def _check_metaimage_is_local(path: Path) -> None:
    with path.open("rb") as handle:
        for line in handle:
            key, _, value = line.partition(b"=")
            if key.strip().lower() == b"elementdatafile":
                if value.strip().upper() != b"LOCAL":
                    raise UploadRejected(
                        400, "MetaImage header names a separate data file; upload a .mha with LOCAL data"
                    )
                return
    raise UploadRejected(400, "MetaImage header has no ElementDataFile")


def _store_dicom(
    source: Path, target: Path, *, keep_phi: bool, uid_map: dict[str, str] | None = None
) -> None:
    if keep_phi:
        shutil.move(source, target)
        return
    try:
        dataset = pydicom.dcmread(source)
        deidentify_dataset(dataset, {} if uid_map is None else uid_map)
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError):
        raise UploadRejected(400, "DICOM file cannot be read for de-identification") from None
    except InputError as exc:
        raise UploadRejected(400, f"DICOM file refused: {exc}") from None
    dataset.save_as(target, enforce_file_format=True)


def _unsafe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _unpack_dicom_zip(source: Path, folder: Path, *, keep_phi: bool, limits: UploadLimits) -> None:
    """The archive's DICOM members as ``folder/<n>.dcm``; other members are skipped."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError):
        raise UploadRejected(400, "zip archive cannot be read") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if any(_unsafe_member(info.filename) for info in archive.infolist()):
            raise UploadRejected(
                400, "zip archive refused: a member path is absolute or leaves the archive (..)"
            )
        if len(members) > limits.max_archive_files:
            raise UploadRejected(413, f"zip archive has more than {limits.max_archive_files} files")
        if sum(info.file_size for info in members) > limits.max_archive_bytes:
            raise UploadRejected(413, f"zip archive unpacks to more than {limits.max_archive_bytes} bytes")
        uid_map: dict[str, str] = {}
        found = 0
        for number, info in enumerate(members):
            raw = folder / f".member-{number}"
            try:
                with archive.open(info) as member, raw.open("wb") as out:
                    shutil.copyfileobj(member, out, _COPY_BLOCK)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
                raise UploadRejected(400, "zip archive is damaged or encrypted") from None
            with raw.open("rb") as handle:
                is_dicom = sniff(handle.read(SNIFF_BYTES)) == "dicom"
            if is_dicom:
                found += 1
                _store_dicom(raw, folder / f"{found:05d}.dcm", keep_phi=keep_phi, uid_map=uid_map)
            raw.unlink(missing_ok=True)
    if found == 0:
        raise UploadRejected(400, "zip archive holds no DICOM files (files with 'DICM' at offset 128)")
