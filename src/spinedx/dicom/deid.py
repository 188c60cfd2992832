"""DICOM de-identification: PS3.15 Basic Application Confidentiality Profile, with a UID map.

The action table (which attribute is removed, emptied, replaced or re-UIDed) is not written
here: it is dicom-anonymizer's copy of PS3.15 Table E.1-1 (:data:`PROFILE_TABLE`), applied by
its ``anonymize_dataset``; private tags are removed. spinedx adds what that library leaves out:

- one UID map for a whole run: every UID is replaced by a new one, the same old UID always
  by the same new one, so a series stays a series and references between instances still
  resolve; :func:`deidentify_tree` stores the map (old -> new) as JSON so results made on the
  de-identified copy can be re-identified inside the hospital (that file *is* the key: it must
  stay where the originals are);
- the profile applied inside sequences that the table keeps, and U* (re-UID the contained
  references) rather than emptying sequences such as ReferencedImageSequence;
- PatientIdentityRemoved, DeidentificationMethod and its code sequence (DCM 113100);
- a refusal of images that declare burned-in annotation: the basic profile does not clean
  pixel data.

Messages never contain attribute values.
"""

from __future__ import annotations

import functools
import json
import threading
from importlib.metadata import version
from pathlib import Path

import pydicom
from dicomanonymizer import simpledicomanonymizer as anonymizer
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path, atomic_write_text

PROFILE_TABLE = "dicomfields_2026c"
"""dicom-anonymizer's action table: PS3.15 Table E.1-1 as of DICOM 2026c."""
UID_MAP_SCHEMA = "spinedx/uid-map@1"
METHOD = (
    f"DICOM PS3.15 Basic Profile (dicom-anonymizer {version('dicom-anonymizer')}, "
    f"{PROFILE_TABLE.removeprefix('dicomfields_')})"
)
"""DeidentificationMethod (LO: at most 64 characters)."""

# dicom-anonymizer keeps its old -> new UID map in one module global; calls swap it for the
# caller's map, one at a time.
_UID_MAP_LOCK = threading.Lock()


def deidentify_dataset(dataset: Dataset, uid_map: dict[str, str]) -> Dataset:
    """De-identify ``dataset`` in place (and return it) with the basic profile.

    ``uid_map`` (old UID -> new UID) is used and extended: pass the same dict for every
    instance of a study or series so that they keep pointing at each other. Raises
    :class:`InputError` for an image that declares burned-in annotation.
    """
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        raise InputError("image declares burned-in annotation; the basic profile does not clean pixel data")
    with _UID_MAP_LOCK:
        saved, anonymizer.dictionary = anonymizer.dictionary, uid_map
        try:
            _apply_profile(dataset)
        finally:
            anonymizer.dictionary = saved
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and "SOPInstanceUID" in dataset:
        file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = METHOD
    method = Dataset()
    method.CodeValue, method.CodingSchemeDesignator, method.CodeMeaning = (
        codes.DCM.BasicApplicationConfidentialityProfile.value,
        "DCM",
        codes.DCM.BasicApplicationConfidentialityProfile.meaning,
    )
    dataset.DeidentificationMethodCodeSequence = [method]
    return dataset


def deidentify_tree(in_dir: Path, out_dir: Path, uid_map_path: Path) -> list[Path]:
    """De-identify every DICOM file under ``in_dir`` (recursively) into ``out_dir``.

    Outputs are named by their new UIDs, ``out_dir/<study>/<series>/<instance>.dcm``, because
    source file and folder names often carry patient names. Files that are not DICOM are
    skipped (never copied). The UID map is read from ``uid_map_path`` when it exists (so
    several runs stay consistent), extended, and written back atomically. Returns the written
    files. Raises :class:`InputError` for a missing ``in_dir`` or a damaged map, and for an
    image with burned-in annotation (naming its path relative to ``in_dir``).
    """
    in_dir, out_dir, uid_map_path = Path(in_dir), Path(out_dir), Path(uid_map_path)
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: folder not found")
    uid_map = _read_uid_map(uid_map_path)
    written = []
    try:
        for path in sorted(p for p in in_dir.rglob("*") if p.is_file()):
            dataset = _read_dicom(path)
            if dataset is None:
                continue
            try:
                deidentify_dataset(dataset, uid_map)
            except InputError as exc:
                raise InputError(f"{path.relative_to(in_dir)}: {exc}") from None
            target = (
                out_dir / _uid_name(dataset, "StudyInstanceUID") / _uid_name(dataset, "SeriesInstanceUID")
            )
            target = target / f"{_uid_name(dataset, 'SOPInstanceUID')}.dcm"
            with atomic_path(target) as tmp:
                dataset.save_as(tmp, enforce_file_format=True)
            written.append(target)
    finally:
        # Written even after a failure: files already de-identified must stay re-identifiable.
        _write_uid_map(uid_map_path, uid_map)
    return written


@functools.cache
def _profile_actions() -> dict:
    """The library's basic-profile table, with U* (re-UID contained references) for sequences."""
    actions = anonymizer.initialize_actions(PROFILE_TABLE)
    for tag in dicom_anonymization_database_selector(PROFILE_TABLE)["X_Z_U_STAR_TAGS"]:
        actions[tag] = _reuid_sequence_or_replace_uid
    return actions


def _reuid_sequence_or_replace_uid(dataset: Dataset, tag) -> None:
    """X/Z/U*: keep a sequence (its items are de-identified by the recursion in
    :func:`_apply_profile`, which re-UIDs the references they hold); otherwise the library's action."""
    element = dataset.get(tag)
    if element is not None and element.VR != "SQ":
        anonymizer.delete_or_empty_or_replace_UID(dataset, tag)


def _apply_profile(dataset: Dataset) -> None:
    """The table on ``dataset``, then on every item of the sequences it kept, depth first."""
    anonymizer.anonymize_dataset(
        dataset, delete_private_tags=True, base_rules_gen=lambda: dict(_profile_actions())
    )
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _apply_profile(item)


def _read_dicom(path: Path) -> Dataset | None:
    """A DICOM file with its pixel data, or None for a file that is not DICOM."""
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError):
        return None


def _uid_name(dataset: Dataset, keyword: str) -> str:
    value = str(dataset.get(keyword, "") or "")
    return value or f"no-{keyword}"


def _read_uid_map(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        uids = data["uids"] if data.get("schema") == UID_MAP_SCHEMA else None
    except (OSError, ValueError, AttributeError, KeyError):
        uids = None
    if not isinstance(uids, dict) or not all(isinstance(v, str) for v in uids.values()):
        raise InputError(f"{path}: not a spinedx UID map (expected schema {UID_MAP_SCHEMA})")
    return dict(uids)


def _write_uid_map(path: Path, uid_map: dict[str, str]) -> None:
    data = {"schema": UID_MAP_SCHEMA, "method": METHOD, "uids": uid_map}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
