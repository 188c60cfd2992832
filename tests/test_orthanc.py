"""The Orthanc bridge against a real Orthanc (Debian's orthanc + orthanc-dicomweb) on loopback.

One Orthanc per module (tests/orthanc_server.py), emptied after each test. Tests upload synthetic
MR studies with REST ``POST /instances`` and run the watcher with ``once``: results must come
back into the same study (found by QIDO-RS), by STOW-RS without chunked encoding or by C-STORE;
Orthanc sends studies to spinedx's C-STORE receiver; a watcher interrupted mid-study and started
again analyses every study exactly once; a study that cannot be analysed is marked failed and the
next one is still done; with ``--deid`` nothing sent back and nothing logged names the patient.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_factory import new_mr_instance
from orthanc_server import SPINEDX_MODALITY, OrthancServer, free_port, orthanc_missing, orthanc_server
from spinedx.dicom import orthanc as bridge
from spinedx.dicom.pacs import listen
from spinedx.errors import InputError
from spinedx.store import open_store, pacs_jobs

MISSING = orthanc_missing()
needs_orthanc = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

PATIENT_NAME, PATIENT_ID = "Secret^Patient", "PID-SECRET-42"
SIDE, SPACING_MM = 256, 1.0  # small slices keep each analysis to a few seconds
RESULT_MODALITIES = {"SR", "SEG", "OT"}


@pytest.fixture(scope="module")
def t2_slice(tmp_path_factory) -> np.ndarray:
    from PIL import Image

    from spinedx.synth.mri import generate_mri_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_mri_dataset(
        root, n_patients=1, seed=3, sequences=("t2",), image_size=(SIDE, SIDE), pixel_spacing_mm=SPACING_MM
    )
    return np.asarray(Image.open(root / "images" / "1_t2.png"), dtype=np.uint16) * 16


@pytest.fixture(scope="module")
def orthanc_module():
    with orthanc_server() as server:
        yield server


@pytest.fixture
def orthanc(orthanc_module):
    """The module's Orthanc, emptied after each test (a deleted study's old changes are skipped)."""
    yield orthanc_module
    for study_id in requests.get(f"{orthanc_module.url}/studies", timeout=10).json():
        requests.delete(f"{orthanc_module.url}/studies/{study_id}", timeout=10).raise_for_status()


def _mr_series(pixels: np.ndarray | None, n_slices: int = 3) -> list[Dataset]:
    """A sagittal MR series of one new study; ``pixels=None``: MR instances without an image."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(n_slices):
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
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, k + 1, ""
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.ImagePositionPatient = [4.0 * (k - 1), 0.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], 4.0
        if pixels is not None:
            ds.set_pixel_data(pixels, "MONOCHROME2", 12)
        datasets.append(ds)
    return datasets


def _upload(server: OrthancServer, datasets: list[Dataset]) -> str:
    """POST each instance to Orthanc's REST API; returns Orthanc's ID of their study."""
    for ds in datasets:
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        answer = requests.post(f"{server.url}/instances", data=buffer.getvalue(), timeout=10)
        answer.raise_for_status()
    return answer.json()["ParentStudy"]


def _wait_stable(server: OrthancServer, *study_ids: str, timeout: float = 15.0) -> None:
    """Until each study is stable and its StableStudy change is in the feed the watcher reads."""

    def logged_stable() -> set[str]:
        changes = requests.get(f"{server.url}/changes", params={"limit": 1000}, timeout=5).json()["Changes"]
        return {change["ID"] for change in changes if change["ChangeType"] == "StableStudy"}

    deadline = time.monotonic() + timeout
    for study_id in study_ids:
        while not (
            requests.get(f"{server.url}/studies/{study_id}", timeout=5).json()["IsStable"]
            and study_id in logged_stable()
        ):
            assert time.monotonic() < deadline, "Orthanc never reported the study stable"
            time.sleep(0.2)


def _series_by_modality(server: OrthancServer, study_uid: str) -> dict[str, list[dict]]:
    """QIDO-RS: the study's series grouped by Modality."""
    client = DICOMwebClient(url=f"{server.url}/dicom-web")
    grouped: dict[str, list[dict]] = {}
    for series in client.search_for_series(study_instance_uid=study_uid):
        grouped.setdefault(series["00080060"]["Value"][0], []).append(series)
    return grouped


def _retrieve_results(server: OrthancServer, study_uid: str) -> list[Dataset]:
    """WADO-RS: every instance of the study's SR, SEG and SC series."""
    client = DICOMwebClient(url=f"{server.url}/dicom-web")
    found = []
    for modality, series_list in _series_by_modality(server, study_uid).items():
        if modality in RESULT_MODALITIES:
            for series in series_list:
                found += client.retrieve_series(study_uid, series["0020000E"]["Value"][0])
    return found


def _watcher(server: OrthancServer, data: Path, **options) -> bridge.OrthancWatcher:
    return bridge.OrthancWatcher(server.url, open_store(None, data), poll_seconds=0.1, **options)


@needs_orthanc
def test_stow_results_land_in_the_same_study_and_a_second_run_repeats_nothing(orthanc, t2_slice, tmp_path):
    series = _mr_series(t2_slice)
    study_uid = series[0].StudyInstanceUID
    study_id = _upload(orthanc, series)
    _wait_stable(orthanc, study_id)
    watcher = _watcher(orthanc, tmp_path / "data")
    posts = []
    watcher.orthanc.session.hooks["response"].append(
        lambda response, *args, **kwargs: (
            posts.append(response.request) if response.request.method == "POST" else None
        )
    )

    outcomes = list(watcher.watch(once=True))

    assert [(o.orthanc_id, o.status) for o in outcomes] == [(study_id, "done")], outcomes
    assert "3 objects stored by STOW-RS and found by QIDO-RS" in outcomes[0].detail
    # One STOW-RS request, with a length and without chunked transfer encoding (dicomweb-client #42).
    assert len(posts) == 1 and posts[0].url.endswith("/dicom-web/studies")
    assert "Transfer-Encoding" not in posts[0].headers and int(posts[0].headers["Content-Length"]) > 0
    grouped = _series_by_modality(orthanc, study_uid)
    assert sorted(grouped) == ["MR", "OT", "SEG", "SR"]
    results = {ds.Modality: ds for ds in _retrieve_results(orthanc, study_uid)}
    source_uids = {str(ds.SOPInstanceUID) for ds in series}
    sr_refs = {
        str(item.ReferencedSOPInstanceUID)
        for study in results["SR"].CurrentRequestedProcedureEvidenceSequence
        for ser in study.ReferencedSeriesSequence
        for item in ser.ReferencedSOPSequence
    }
    assert sr_refs and sr_refs <= source_uids
    assert results["SEG"].ReferencedSeriesSequence[0].SeriesInstanceUID == series[0].SeriesInstanceUID
    job = pacs_jobs.status_of(watcher.store, study_id)
    assert job.status == "done" and job.attempts == 1
    assert {o["sop_instance_uid"] for o in job.outputs} == {str(ds.SOPInstanceUID) for ds in results.values()}

    # Storing the results made the study change and become stable again: it is not analysed twice.
    _wait_stable(orthanc, study_id)
    again = _watcher(orthanc, tmp_path / "data")
    assert list(again.watch(once=True)) == []
    assert pacs_jobs.status_of(again.store, study_id).attempts == 1
    assert sum(len(v) for k, v in _series_by_modality(orthanc, study_uid).items() if k != "MR") == 3


@needs_orthanc
def test_a_study_waits_for_stable_age_and_a_silent_destination_and_orthanc_sends_by_c_store(
    orthanc, t2_slice, tmp_path
):
    """--stable-age and a C-STORE destination that does not answer leave the study queued, not
    lost or failed; Orthanc -> spinedx: ``/modalities/spinedx/store`` sends the study to a
    ``pacs listen`` receiver (spinedx -> Orthanc by C-STORE: the restart test)."""
    series = _mr_series(t2_slice)
    study_uid = series[0].StudyInstanceUID
    study_id = _upload(orthanc, series)
    _wait_stable(orthanc, study_id)
    # Not quiet for an hour yet by the watcher's own rule: left for a later run.
    assert list(_watcher(orthanc, tmp_path / "data", stable_age=3600).watch(once=True)) == []
    assert pacs_jobs.status_of(open_store(None, tmp_path / "data"), study_id) is None

    dead = f"127.0.0.1:{free_port()}:NOBODY"
    with pytest.raises(InputError, match=r"^--send-to: cannot associate with NOBODY"):
        list(_watcher(orthanc, tmp_path / "data", send_to=dead).watch(once=True))
    job = pacs_jobs.status_of(open_store(None, tmp_path / "data"), study_id)
    assert (job.status, job.attempts) == ("pending", 1)

    complete = threading.Event()
    inbox = tmp_path / "inbox"
    with listen(orthanc.spinedx_port, inbox, stable_seconds=0.3, on_study_complete=lambda _: complete.set()):
        answer = requests.post(
            f"{orthanc.url}/modalities/{SPINEDX_MODALITY}/store", data=study_id, timeout=60
        )
        answer.raise_for_status()
        assert complete.wait(15), "the study sent by Orthanc never completed at the receiver"
    received = sorted(
        str(pydicom.dcmread(path).SOPInstanceUID) for path in (inbox / study_uid).rglob("*.dcm")
    )
    assert received == sorted(str(ds.SOPInstanceUID) for ds in series)


class Crash(BaseException):
    """Stands for the watcher's process dying: nothing in the watcher catches it."""


@needs_orthanc
def test_a_watcher_interrupted_mid_study_and_started_again_analyses_each_study_once(
    orthanc, t2_slice, tmp_path, monkeypatch
):
    study_ids = [_upload(orthanc, _mr_series(t2_slice)) for _ in range(2)]
    _wait_stable(orthanc, *study_ids)
    completed: list[str] = []
    real_analyze = bridge.analyze_inputs

    def analyze_or_crash(paths, out_dir, *args, **kwargs):
        if completed:  # the second study dies once claimed and pulled, as its analysis starts
            raise Crash
        completed.append(Path(out_dir).name)  # the watcher's results folder is named by the study
        yield from real_analyze(paths, out_dir, *args, **kwargs)

    monkeypatch.setattr(bridge, "analyze_inputs", analyze_or_crash)
    first = _watcher(orthanc, tmp_path / "data")
    with pytest.raises(Crash):
        list(first.watch(once=True))
    first.store.close()
    states = {i: pacs_jobs.status_of(first.store, i).status for i in study_ids}
    assert sorted(states.values()) == ["done", "running"], states
    interrupted = next(i for i, state in states.items() if state == "running")

    monkeypatch.setattr(bridge, "analyze_inputs", real_analyze)
    second = _watcher(orthanc, tmp_path / "data", send_to="ORTHANC")  # C-STORE to Orthanc's DICOM port
    outcomes = list(second.watch(once=True))

    assert [(o.orthanc_id, o.status) for o in outcomes] == [(interrupted, "done")]
    assert "stored by C-STORE to ORTHANC and found by QIDO-RS" in outcomes[0].detail
    jobs = {job.orthanc_id: job for job in pacs_jobs.list_jobs(second.store)}
    assert {i: jobs[i].status for i in study_ids} == dict.fromkeys(study_ids, "done")
    assert jobs[interrupted].attempts == 2 and jobs[completed[0]].attempts == 1
    for study_id in study_ids:
        uid = requests.get(f"{orthanc.url}/studies/{study_id}", timeout=5).json()["MainDicomTags"]
        grouped = _series_by_modality(orthanc, uid["StudyInstanceUID"])
        assert {m: len(v) for m, v in grouped.items()} == {"MR": 1, "SR": 1, "SEG": 1, "OT": 1}
    assert list(_watcher(orthanc, tmp_path / "data").watch(once=True)) == []


@needs_orthanc
def test_a_bad_study_fails_the_next_is_done_and_deid_leaves_no_name(orthanc, t2_slice, tmp_path, caplog):
    from spinedx.cli import app

    bad_id = _upload(orthanc, _mr_series(None, n_slices=1))
    good = _mr_series(t2_slice)
    good_id = _upload(orthanc, good)
    _wait_stable(orthanc, bad_id, good_id)
    caplog.set_level("DEBUG")
    data = tmp_path / "data"

    run = CliRunner().invoke(
        app, ["pacs", "watch", "--orthanc", orthanc.url, "--data", str(data), "--deid", "--once"]
    )

    assert run.exit_code == 2, run.output
    assert f"error: study {bad_id}: " in run.output and f"study {good_id}: 1 series analysed" in run.output
    store = open_store(None, data)
    bad, done = pacs_jobs.status_of(store, bad_id), pacs_jobs.status_of(store, good_id)
    assert bad.status == "failed" and "\n" not in bad.reason and bad.reason.startswith("analyse: ")
    assert done.status == "done"
    # The original study is left as it was; the results form a de-identified study of their own.
    assert set(_series_by_modality(orthanc, good[0].StudyInstanceUID)) == {"MR"}
    client = DICOMwebClient(url=f"{orthanc.url}/dicom-web")
    other_studies = [
        s["0020000D"]["Value"][0]
        for s in client.search_for_studies()
        if s["0020000D"]["Value"][0] not in {good[0].StudyInstanceUID}
    ]
    results = [ds for uid in other_studies for ds in _retrieve_results(orthanc, uid)]
    assert sorted(ds.Modality for ds in results) == ["OT", "SEG", "SR"]
    for ds in results:
        encoded = DicomBytesIO()
        ds.save_as(encoded, enforce_file_format=True)
        for secret in (PATIENT_NAME, PATIENT_ID, good[0].StudyInstanceUID, "ACC1"):
            assert secret.encode() not in encoded.getvalue(), (ds.Modality, secret)
    assert (data / "pacs" / "uid_map.json").is_file()
    for text in (run.output, caplog.text, bad.reason):
        assert PATIENT_NAME not in text and PATIENT_ID not in text and "Secret" not in text


def test_watch_refuses_a_bad_orthanc_url_or_a_silent_one_in_one_line(tmp_path, monkeypatch, capsys):
    from spinedx.cli import main

    for url, expected in (
        ("ftp://127.0.0.1/", "error: --orthanc: expected an http(s) URL"),
        (f"http://127.0.0.1:{free_port()}", "error: --orthanc: no Orthanc answers at http://127.0.0.1:"),
    ):
        argv = ["spinedx", "pacs", "watch", "--orthanc", url, "--data", str(tmp_path), "--once"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            main()
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.startswith(expected) and len(err.splitlines()) == 1, err


@needs_orthanc
def test_watch_once_stops_in_one_line_when_orthanc_stops_answering(orthanc, tmp_path):
    watcher = _watcher(orthanc, tmp_path / "data")
    watcher.orthanc.url = f"http://127.0.0.1:{free_port()}"  # as if Orthanc went away after the start
    with pytest.raises(InputError, match=r"^--orthanc: http://127\.0\.0\.1:\d+ stopped answering"):
        list(watcher.watch(once=True))


def test_the_how_to_shows_the_orthanc_configuration_the_tests_use():
    from orthanc_server import orthanc_config

    page = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "orthanc.md").read_text()
    shown = json.loads(page.split("```json\n", 1)[1].split("```", 1)[0])
    assert shown == orthanc_config(Path("/var/lib/orthanc/spinedx"), 8042, 4242, 11112, stable_age=1)
