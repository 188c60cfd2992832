"""DIMSE PACS bridge (spinedx.dicom.pacs): C-STORE send and a listening SCP, over loopback only.

Small synthetic MR instances of one study are sent over two associations to a listener with a
short stability window; the study must land at its UID paths and be reported complete once.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_factory import new_mr_instance
from spinedx.dicom.pacs import listen, parse_destination, send_files
from spinedx.errors import InputError

PATIENT_NAME, PATIENT_ID = "Secret^Patient", "PID-SECRET-42"


def _mr(path: Path, *, study: str, series: str, number: int) -> Path:
    ds = new_mr_instance()
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.InstanceNumber = "MR", number
    pixels = np.full((8, 8), number, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_send_over_two_associations_lands_at_uid_paths_and_completes_once(tmp_path, caplog):
    study, series = generate_uid(), generate_uid()
    src = tmp_path / "src"
    src.mkdir()
    files = [_mr(src / f"{i}.dcm", study=study, series=series, number=i) for i in range(4)]
    not_dicom = src / "notes.txt"
    not_dicom.write_text("not a DICOM file\n")
    calls: list[tuple[Path, str]] = []
    done = threading.Event()

    def on_complete(study_dir: Path) -> None:
        calls.append((study_dir, threading.current_thread().name))
        done.set()

    store = tmp_path / "store"
    caplog.set_level("DEBUG")  # every logger, pynetdicom included
    with listen(_free_port(), store, stable_seconds=0.5, on_study_complete=on_complete) as server:
        first = send_files(files[:2] + [not_dicom], "127.0.0.1", server.port, "SPINEDX")
        second = send_files(files[2:], "127.0.0.1", server.port, "SPINEDX", calling_ae="OTHER")
        assert not calls, "study reported complete before its stability window passed"
        assert done.wait(10), "on_study_complete was never called"
        time.sleep(1.0)  # a second, wrong call would come within this time
    assert len(calls) == 1
    assert calls[0][0] == store / study
    assert calls[0][1].startswith("spinedx-study")

    assert [r.ok for r in first.results] == [True, True, False]
    assert first.results[2].path == not_dicom and "not a readable DICOM" in first.results[2].message
    assert "\n" not in first.results[2].message
    assert second.ok and len(second.sent) == 2
    for path in files:
        ds = pydicom.dcmread(path)
        stored = store / study / series / f"{ds.SOPInstanceUID}.dcm"
        assert stored.is_file()
        back = pydicom.dcmread(stored)
        assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData
    assert not list(store.rglob(".*"))  # no temporary files left
    logged = caplog.text + "".join(r.message for r in first.results + second.results)
    assert PATIENT_NAME not in logged and PATIENT_ID not in logged


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_listener_refuses_traversal_uids(tmp_path):
    src = tmp_path / "evil.dcm"
    _mr(src, study="../../etc", series=generate_uid(), number=1)
    store = tmp_path / "store"
    with listen(0, store, stable_seconds=0.1) as server:
        report = send_files([src], "127.0.0.1", server.port, "SPINEDX")
    assert not report.ok and report.results[0].status == 0xC000
    assert not any(p.is_file() for p in tmp_path.rglob("*.dcm") if p != src)


def test_unreachable_port_is_one_line_input_error(tmp_path):
    src = _mr(tmp_path / "a.dcm", study=generate_uid(), series=generate_uid(), number=1)
    port = _free_port()
    with pytest.raises(InputError) as err:
        send_files([src], "127.0.0.1", port, "PACS", timeout=5)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "PACS" in message and "\n" not in message


@pytest.mark.parametrize(
    "text", ["pacs", "pacs:104", "pacs:x:AE", "pacs:70000:AE", ":104:AE", "pacs:104:", "h:104:" + "A" * 17]
)
def test_bad_destination_is_input_error(text):
    with pytest.raises(InputError, match="destination"):
        parse_destination(text)


def test_parse_destination():
    assert parse_destination("pacs.local:104:ORTHANC") == ("pacs.local", 104, "ORTHANC")
    assert parse_destination("[::1]:11112:AE") == ("::1", 11112, "AE")


def test_gateway_analyses_a_stable_study_and_sends_sr_seg_and_sc_back(tmp_path):
    """A modality sends an MR series to `spinedx pacs listen --analyze --send-to` (api.pacs_listen);
    once the study is stable it is analysed and the three result objects reach the PACS in its study."""
    from PIL import Image

    from spinedx import api
    from spinedx.synth.mri import generate_mri_dataset
    from test_dicom_out import IOP_MIRRORED
    from test_dicom_out import _mr as mr_instance

    generate_mri_dataset(tmp_path / "synth", n_patients=1, seed=3, sequences=("t2",))
    display = np.asarray(Image.open(tmp_path / "synth" / "images" / "1_t2.png"), dtype=np.float64) * 16
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    (tmp_path / "modality").mkdir()
    files = []
    for k in range(3):
        ds = mr_instance(display[::-1, ::-1], iop=IOP_MIRRORED, ipp=(4.0 - 4.0 * k, 100.0, -150.0), study=study,
                         series=series, frame=frame, number=3 - k)  # fmt: skip
        files.append(tmp_path / "modality" / f"IM{k}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)

    with listen(0, tmp_path / "pacs", ae_title="PACS", stable_seconds=0.2) as pacs:
        gateway = api.pacs_listen(0, tmp_path / "inbox", stable_seconds=0.5, analyze_into=tmp_path / "results",
                                  send_to=f"127.0.0.1:{pacs.port}:PACS")  # fmt: skip
        try:
            assert send_files(files, "127.0.0.1", gateway.port, "SPINEDX").ok
            back = tmp_path / "pacs" / study
            assert _wait_for(lambda: len(list(back.rglob("*.dcm"))) == 3, timeout=180)
        finally:
            gateway.stop()
    classes = {pydicom.dcmread(path).SOPClassUID.name for path in back.rglob("*.dcm")}
    assert classes == {
        "Comprehensive 3D SR Storage",
        "Segmentation Storage",
        "Secondary Capture Image Storage",
    }
