"""``spinedx analyze --deid``: only de-identified copies are analysed; no identifier reaches the outputs.

A synthetic MR series whose folder and tags name the patient goes through the CLI with
``--dicom --deid``; every file written under OUT (findings, report, SR, SEG, SC, copies), every
name in it and what the command printed must be free of the patient's identifiers, and the UID
map must lead from the results back to the original study.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_factory import new_mr_instance
from spinedx.errors import InputError

IDENTIFIERS = ("Secret^Patient", "Secret", "PID-SECRET-42", "ACC-SECRET-7", "19600101")
SIDE, SPACING_MM = 256, 1.0


def _series(folder, pixels: np.ndarray, study: str | None = None) -> str:
    folder.mkdir(parents=True)
    study, series, frame = study or generate_uid(), generate_uid(), generate_uid()
    for k in range(3):
        ds = new_mr_instance()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Secret^Patient",
            "PID-SECRET-42",
            "19600101",
            "F",
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101010", "1", "ACC-SECRET-7"
        ds.ReferringPhysicianName, ds.Manufacturer, ds.Modality = "Doc^Ref", "Synth", "MR"
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, k + 1, ""
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.ImagePositionPatient = [4.0 * (k - 1), 0.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], 4.0
        ds.set_pixel_data(pixels, "MONOCHROME2", 12)
        ds.save_as(folder / f"Secret_Patient_{k}.dcm", enforce_file_format=True)
    return study


def test_analyze_deid_writes_no_identifier_and_keeps_the_uid_map(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from spinedx.cli import main
    from spinedx.synth.mri import generate_mri_dataset

    generate_mri_dataset(tmp_path / "synth", n_patients=1, seed=3, sequences=("t2",),
                         image_size=(SIDE, SIDE), pixel_spacing_mm=SPACING_MM)  # fmt: skip
    pixels = np.asarray(Image.open(tmp_path / "synth" / "images" / "1_t2.png"), dtype=np.uint16) * 16
    study = _series(tmp_path / "in" / "Secret_Patient", pixels)
    out, uid_map = tmp_path / "out", tmp_path / "site" / "uid_map.json"
    argv = ["spinedx", "analyze", str(tmp_path / "in" / "Secret_Patient"), "--out", str(out), "--dicom", "--deid",
            "--uid-map", str(uid_map)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 0

    printed = capsys.readouterr()
    written = sorted(path for path in out.rglob("*") if path.is_file())
    names = {path.name for path in written}
    assert {"findings.json", "report.html", "sr.dcm", "seg.dcm", "overlay.dcm"} <= names
    for path in written:
        data = path.read_bytes()
        for secret in (*IDENTIFIERS, study):
            assert secret.encode() not in data, (path.relative_to(out), secret)
    for text in (printed.out, printed.err, *(str(p.relative_to(out)) for p in written)):
        assert "Secret" not in text and study not in text
    new_uids = json.loads(uid_map.read_text())["uids"]
    sr = pydicom.dcmread(next(p for p in written if p.name == "sr.dcm"))
    assert new_uids[study] == sr.StudyInstanceUID


def test_analyze_deid_reports_a_folder_without_dicom_and_goes_on(tmp_path):
    from spinedx import api

    empty = tmp_path / "not-dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("no DICOM here\n")
    results = api.analyze([empty], tmp_path / "out", deid=True, uid_map=tmp_path / "map.json")
    assert [r.error for r in results] == [f"--deid: {empty}: no DICOM file to de-identify"]


def test_a_study_folder_stays_one_study_and_non_dicom_series_are_refused(tmp_path):
    from spinedx.dicom.deid_inputs import deidentified_copy

    pixels = np.zeros((64, 64), dtype=np.uint16)
    study = tmp_path / "Secret_Patient"
    study_uid = _series(study / "t1", pixels)
    _series(study / "t2", pixels, study_uid)
    [copy] = deidentified_copy(study, tmp_path / "copies", tmp_path / "map.json")
    assert copy.name == json.loads((tmp_path / "map.json").read_text())["uids"][study_uid]
    assert len([series for series in copy.iterdir() if series.is_dir()]) == 2

    (study / "t3.png").write_bytes(b"not DICOM")  # a non-DICOM series of the study
    with pytest.raises(InputError, match="--deid copies DICOM series only"):
        deidentified_copy(study, tmp_path / "copies-2", tmp_path / "map.json")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
