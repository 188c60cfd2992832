"""De-identification (spinedx.dicom.deid): basic profile, consistent UID map, mapping file."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from dicom_factory import new_mr_instance
from spinedx.dicom.deid import UID_MAP_SCHEMA, deidentify_dataset, deidentify_tree
from spinedx.errors import InputError

IDENTIFIERS = {
    "PatientName": "Secret^Patient",
    "PatientID": "PID-SECRET-42",
    "PatientBirthDate": "19600101",
    "StudyDate": "20240102",
    "SeriesDate": "20240103",
    "AcquisitionDate": "20240104",
    "ContentDate": "20240105",
    "AccessionNumber": "ACC-SECRET-7",
    "ReferringPhysicianName": "Doc^Secret",
    "InstitutionName": "Secret Hospital",
}


def _instance(study: str, series: str, frame: str, number: int, referenced: str | None = None) -> Dataset:
    ds = new_mr_instance()
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.Modality, ds.InstanceNumber = "MR", number
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [0, 1, 0, 0, 0, -1], [4.0 * number, 0, 0]
    if referenced is not None:  # a reference to another instance of the series (U* sequence)
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = MRImageStorage, referenced
        ds.ReferencedImageSequence = [item]
    block = ds.private_block(0x0011, "SECRET CREATOR", create=True)
    block.add_new(0x01, "LO", "private secret")
    ds.set_pixel_data(np.arange(16, dtype=np.uint16).reshape(4, 4), "MONOCHROME2", 12)
    return ds


@pytest.fixture
def series(tmp_path):
    """Three MR instances of one series in a folder named after the patient, plus a text file."""
    folder = tmp_path / "in" / "Secret_Patient"
    folder.mkdir(parents=True)
    study, series_uid, frame = generate_uid(), generate_uid(), generate_uid()
    first = None
    originals = []
    for number in (1, 2, 3):
        ds = _instance(study, series_uid, frame, number, referenced=first)
        first = first or ds.SOPInstanceUID
        ds.save_as(folder / f"IM{number}.dcm", enforce_file_format=True)
        originals.append(ds)
    (folder / "notes.txt").write_text(f"{IDENTIFIERS['PatientName']} notes")
    return tmp_path / "in", originals


def test_tree_removes_identifiers_and_remaps_uids_consistently(series, tmp_path):
    in_dir, originals = series
    written = deidentify_tree(in_dir, tmp_path / "out", tmp_path / "uids.json")
    assert len(written) == 3  # notes.txt is skipped, not copied
    assert all("Secret" not in str(p.relative_to(tmp_path / "out")) for p in written)
    outputs = [pydicom.dcmread(p) for p in written]
    for path, ds in zip(written, outputs, strict=True):
        raw = path.read_bytes()
        for value in IDENTIFIERS.values():
            assert value.encode() not in raw, value
        assert b"private secret" not in raw and b"SECRET CREATOR" not in raw
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        np.testing.assert_array_equal(ds.pixel_array, np.arange(16).reshape(4, 4))

    uid_map = json.loads((tmp_path / "uids.json").read_text())
    assert uid_map["schema"] == UID_MAP_SCHEMA
    uids = uid_map["uids"]
    old = originals[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert {ds.get(keyword) for ds in outputs} == {uids[old.get(keyword)]}
        assert uids[old.get(keyword)] != old.get(keyword)
    by_number = {int(ds.InstanceNumber): ds for ds in outputs}
    for original in originals:
        assert by_number[int(original.InstanceNumber)].SOPInstanceUID == uids[original.SOPInstanceUID]
    # The reference from instance 2 to instance 1 still resolves after remapping.
    reference = by_number[2].ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert reference == by_number[1].SOPInstanceUID


def test_a_second_run_with_the_same_map_gives_the_same_uids(series, tmp_path):
    in_dir, _ = series
    first = deidentify_tree(in_dir, tmp_path / "a", tmp_path / "uids.json")
    second = deidentify_tree(in_dir, tmp_path / "b", tmp_path / "uids.json")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]


def test_dataset_with_burned_in_annotation_is_refused(series, tmp_path):
    _, originals = series
    ds = originals[0]
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InputError, match="burned-in") as caught:
        deidentify_dataset(ds, {})
    assert IDENTIFIERS["PatientName"] not in str(caught.value)


def test_damaged_uid_map_is_an_input_error(series, tmp_path):
    in_dir, _ = series
    (tmp_path / "uids.json").write_text("[]")
    with pytest.raises(InputError, match="not a spinedx UID map"):
        deidentify_tree(in_dir, tmp_path / "out", tmp_path / "uids.json")


def test_deid_command_writes_the_tree_and_the_uid_map(series, tmp_path):
    from typer.testing import CliRunner

    from spinedx.cli import app

    in_dir, originals = series
    result = CliRunner().invoke(
        app, ["deid", str(in_dir), str(tmp_path / "out"), "--uid-map", str(tmp_path / "map.json")]
    )
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == len(originals) and (tmp_path / "map.json").is_file()
    assert IDENTIFIERS["PatientName"] not in result.output
