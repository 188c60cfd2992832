"""The review service's API through FastAPI's TestClient: upload, analysis, slices, files, reviews, agreement."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.uid import generate_uid

from dicom_factory import new_mr_instance
from spinedx.serve.analysis import AnalysisPool
from spinedx.serve.app import create_app
from spinedx.serve.settings import ServeSettings
from spinedx.serve.uploads import sniff
from spinedx.store import open_store

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "JD-4711"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """One synthetic patient (t1 and t2 384x384 slices) in the spider-sagittal layout."""
    from spinedx.synth.mri import generate_mri_dataset

    return generate_mri_dataset(tmp_path_factory.mktemp("mri"), n_patients=1, seed=3, image_size=(384, 384))


@pytest.fixture(scope="module")
def slice_png(synthetic) -> bytes:
    return (synthetic / "images" / "1_t2.png").read_bytes()


def dicom_bytes(
    png: bytes, *, position: float = 0.0, series_uid: str | None = None, number: int = 1
) -> bytes:
    """A sagittal MR DICOM image of the PNG's pixels (12-bit), carrying a patient name and ID."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint16) * 16
    ds = new_mr_instance()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.InstanceNumber = number
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # rows toward posterior, columns toward inferior
    ds.ImagePositionPatient = [position, 0, 0]
    ds.PixelSpacing = [0.76, 0.76]
    ds.SliceThickness = 4
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "slice.png", task: str | None = None):
    fields = {"task": task} if task else None
    return client.post("/api/studies", files={"file": (name, data)}, data=fields, headers=AUTH)


def wait_done(client: TestClient, study_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/studies/{study_id}", headers=AUTH).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"study {study_id} not analysed within {timeout} s")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-data")
    with TestClient(create_app(ServeSettings(data_dir=data, token=TOKEN))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def analysed(client, slice_png) -> str:
    response = upload(client, slice_png, "patient slice.png")
    assert response.status_code == 202
    study_id = response.json()["id"]
    assert wait_done(client, study_id)["status"] == "done"
    return study_id


def test_png_upload_is_analysed_with_slices_files_and_report(client, analysed, slice_png):
    status = client.get(f"/api/studies/{analysed}", headers=AUTH).json()
    assert (status["status"], status["progress"], status["error"], status["task"]) == (
        "done",
        1.0,
        None,
        "mri-discs",
    )
    assert status["name"] == "patient slice.png"
    findings = client.get(f"/api/studies/{analysed}/findings", headers=AUTH).json()
    assert findings["schema"] == "spinedx/findings@1" and len(findings["discs"]) >= 5
    slices = client.get(f"/api/studies/{analysed}/slices", headers=AUTH).json()
    assert slices == {"count": 1, "analysed_index": 0, "width": 384, "height": 384, "pixel_spacing_mm": None}
    image = client.get(f"/api/studies/{analysed}/slices/0", headers=AUTH)
    assert image.headers["content-type"] == "image/png"
    decoded = Image.open(io.BytesIO(image.content))
    assert decoded.mode == "L" and decoded.size == (384, 384)
    assert client.get(f"/api/studies/{analysed}/slices/1", headers=AUTH).status_code == 404
    for name in (
        "overlay.png",
        findings["masks"],
        findings["mask_labels"],
        findings["discs"][0]["evidence"]["heatmap"],
    ):
        assert client.get(f"/api/studies/{analysed}/files/{name}", headers=AUTH).status_code == 200, name
    report = client.get(f"/api/studies/{analysed}/report", headers=AUTH)
    assert report.status_code == 200 and "<html" in report.text.lower()
    listed = client.get("/api/studies", headers=AUTH).json()
    assert any(study["id"] == analysed and study["findings_total"] > 0 for study in listed)


def test_files_route_refuses_traversal_and_unknown_ids(client, analysed):
    for path in (
        "..%2F..%2F..%2Fspinedx.sqlite",
        "%2E%2E/%2E%2E/%2E%2E/spinedx.sqlite",
        "%2Fetc%2Fpasswd",
        "evidence/..%2F..%2F..%2Fspinedx.sqlite",
    ):
        assert client.get(f"/api/studies/{analysed}/files/{path}", headers=AUTH).status_code == 404, path
    assert client.get("/api/studies/nope", headers=AUTH).status_code == 404
    assert client.get("/api/studies/nope/findings", headers=AUTH).status_code == 404


def test_reviews_store_before_after_source_and_model_version(client, analysed):
    state = client.get(f"/api/studies/{analysed}/state", headers=AUTH).json()["findings"]
    by_id = {item["finding"]: item for item in state}
    assert {"L4/L5:disc", "L4/L5:pfirrmann", "L4/L5:herniation"} <= by_id.keys()
    model_grade = by_id["L4/L5:pfirrmann"]["model_value"]
    corrected = 5 if model_grade != 5 else 1
    response = client.post(
        f"/api/studies/{analysed}/reviews",
        headers=AUTH,
        json={
            "reviewer": "dr.a",
            "decisions": [
                {
                    "finding": "L4/L5:pfirrmann",
                    "action": "correct",
                    "value": corrected,
                    "comment": "dark disc",
                },
                {"finding": "L4/L5:disc", "action": "accept"},
                {"finding": "L3/L4:herniation", "action": "reject"},
            ],
        },
    )
    assert response.status_code == 201
    assert response.json()["saved"] == 3 and response.json()["study"]["findings_decided"] == 3
    history = client.get(f"/api/studies/{analysed}/reviews", headers=AUTH).json()
    first = history[0]
    assert (first["finding"], first["reviewer"], first["action"]) == ("L4/L5:pfirrmann", "dr.a", "correct")
    assert (first["before"], first["after"], first["source"], first["comment"]) == (
        model_grade,
        corrected,
        "person",
        "dark disc",
    )
    assert first["model_version"] and first["time"].endswith("+00:00")
    assert (history[1]["after"], history[1]["source"]) == (True, "model")
    assert (history[2]["after"], history[2]["source"]) == (False, "person")  # rejected: not present
    now = {
        item["finding"]: item
        for item in client.get(f"/api/studies/{analysed}/state", headers=AUTH).json()["findings"]
    }
    assert (now["L4/L5:pfirrmann"]["current_value"], now["L4/L5:pfirrmann"]["source"]) == (
        corrected,
        "person",
    )
    assert now["L4/L5:pfirrmann"]["decided"] and now["L4/L5:pfirrmann"]["reviewers"] == ["dr.a"]
    assert not now["L5/S1:pfirrmann"]["decided"]


def test_bad_decisions_are_refused_whole(client, analysed):
    before = len(client.get(f"/api/studies/{analysed}/reviews", headers=AUTH).json())
    for decision in (
        {"finding": "L4/L5:pfirrmann", "action": "correct", "value": 7},
        {"finding": "L4/L5:herniation", "action": "correct", "value": 3},
        {"finding": "L9/L10:disc", "action": "accept"},
    ):
        body = {"reviewer": "dr.a", "decisions": [{"finding": "L5/S1:disc", "action": "accept"}, decision]}
        response = client.post(f"/api/studies/{analysed}/reviews", headers=AUTH, json=body)
        assert response.status_code == 400 and decision["finding"] in response.json()["detail"]
    bad_action = {"reviewer": "dr.a", "decisions": [{"finding": "L5/S1:disc", "action": "maybe"}]}
    assert client.post(f"/api/studies/{analysed}/reviews", headers=AUTH, json=bad_action).status_code == 422
    assert len(client.get(f"/api/studies/{analysed}/reviews", headers=AUTH).json()) == before


def test_study_is_reviewed_when_every_finding_is_decided_and_agreement_is_measured(client, analysed):
    state = client.get(f"/api/studies/{analysed}/state", headers=AUTH).json()["findings"]
    for reviewer in ("dr.a", "dr.b"):
        decisions = [{"finding": item["finding"], "action": "accept"} for item in state]
        if reviewer == "dr.b":  # disagrees on two Pfirrmann grades
            pfirrmann = [item for item in state if item["finding"].endswith(":pfirrmann")][:2]
            for item in pfirrmann:
                value = 2 if item["current_value"] != 2 else 3
                decisions.append({"finding": item["finding"], "action": "correct", "value": value})
        response = client.post(
            f"/api/studies/{analysed}/reviews",
            headers=AUTH,
            json={"reviewer": reviewer, "decisions": decisions},
        )
        assert response.status_code == 201
    status = response.json()["study"]
    assert status["reviewed"] and status["findings_decided"] == status["findings_total"] == len(state)
    rows = client.get("/api/agreement", headers=AUTH).json()
    by_kind = {row["finding"]: row for row in rows if row["reviewers"] == ["dr.a", "dr.b"]}
    assert by_kind["pfirrmann"]["n"] == sum(item["finding"].endswith(":pfirrmann") for item in state)
    assert by_kind["pfirrmann"]["agreement"] < 1.0
    assert by_kind["pfirrmann"]["kappa"] is None or by_kind["pfirrmann"]["kappa"] < 1.0
    assert by_kind["disc"]["agreement"] == 1.0 and by_kind["disc"]["kappa"] is None  # one value throughout


def test_zip_of_a_dicom_series_gives_a_16_bit_stack(client, slice_png):
    series = generate_uid()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for k in range(3):
            zipped.writestr(
                f"series/IM{k}", dicom_bytes(slice_png, position=4.0 * k, series_uid=series, number=k + 1)
            )
        zipped.writestr("series/README.txt", "not an image")
    response = upload(client, archive.getvalue(), "study.zip")
    assert response.status_code == 202
    status = wait_done(client, response.json()["id"])
    assert status["status"] == "done", status["error"]
    assert status["name"].startswith(
        "DICOM study"
    )  # no client file name: DICOM file names carry patient names
    slices = client.get(f"/api/studies/{status['id']}/slices", headers=AUTH).json()
    assert (slices["count"], slices["analysed_index"]) == (3, 1)
    assert slices["pixel_spacing_mm"] == pytest.approx([0.76, 0.76])
    decoded = Image.open(
        io.BytesIO(client.get(f"/api/studies/{status['id']}/slices/2", headers=AUTH).content)
    )
    assert decoded.mode in ("I;16", "I") and np.asarray(decoded).max() > 255


def test_unknown_task_and_unreadable_content_are_refused(client, slice_png):
    assert upload(client, slice_png, task="no-such-task").status_code == 400
    response = upload(client, b"just some text, named like an image", "slice.png")
    assert response.status_code == 415 and "unsupported file type" in response.json()["detail"]


def test_content_is_sniffed_not_the_name(tmp_path, slice_png):
    import gzip

    nifti = bytearray(352)
    nifti[0:4] = (348).to_bytes(4, "little")
    nifti[344:348] = b"n+1\0"
    cases = {
        "png": slice_png,
        "jpeg": b"\xff\xd8\xff\xe0" + bytes(100),
        "dicom": bytes(128) + b"DICM" + bytes(10),
        "zip": b"PK\x03\x04" + bytes(30),
        "nifti": bytes(nifti),
        "nifti-gz": gzip.compress(bytes(nifti) + bytes(1000)),
        "mha": b"ObjectType = Image\nNDims = 2\n",
        None: b"%PDF-1.7 named slice.png",
    }
    for kind, head in cases.items():
        assert sniff(head[:1024]) == kind, kind


def test_queue_full_is_503_and_a_restart_finishes_every_queued_study(tmp_path, slice_png):
    settings = ServeSettings(data_dir=tmp_path, token=TOKEN, workers=1, max_queued=2)
    # No worker thread: uploads stay queued, as in a server killed before analysing them.
    original_start = AnalysisPool.start
    AnalysisPool.start = lambda self: 0
    try:
        with TestClient(create_app(settings)) as stalled:
            ids = [upload(stalled, slice_png).json()["id"] for _ in range(2)]
            full = upload(stalled, slice_png)
            assert full.status_code == 503 and "queue is full" in full.json()["detail"]
    finally:
        AnalysisPool.start = original_start
    store = open_store(None, tmp_path)
    with store.session() as session:  # one left "running" by a process that died mid-analysis
        from spinedx.store import Study

        session.get(Study, ids[0]).status = "running"
    store.close()
    with TestClient(create_app(settings)) as restarted:
        assert [wait_done(restarted, study_id)["status"] for study_id in ids] == ["done", "done"]
        assert len(restarted.get("/api/studies", headers=AUTH).json()) == 2


def test_nifti_and_16_bit_png_uploads_keep_their_depth(client, slice_png, tmp_path):
    import SimpleITK as sitk

    grey = np.asarray(Image.open(io.BytesIO(slice_png)).convert("L"), dtype=np.uint16) * 257
    # A 3-slice sagittal volume: numpy axes (z: superior, y: posterior, x: left), rows of the PNG cranial first.
    volume = sitk.GetImageFromArray(np.repeat(grey[::-1, :, None], 3, axis=2))
    volume.SetSpacing((3.0, 0.8, 0.8))
    sitk.WriteImage(volume, str(tmp_path / "volume.nii.gz"))
    deep_png = io.BytesIO()
    Image.fromarray(grey).save(deep_png, format="PNG")
    for name, data, count in (
        ("volume.nii.gz", (tmp_path / "volume.nii.gz").read_bytes(), 3),
        ("deep.png", deep_png.getvalue(), 1),
    ):
        response = upload(client, data, name)
        assert response.status_code == 202
        status = wait_done(client, response.json()["id"])
        assert (status["status"], status["task"]) == ("done", "mri-discs"), status["error"]
        slices = client.get(f"/api/studies/{status['id']}/slices", headers=AUTH).json()
        assert slices["count"] == count and (slices["width"], slices["height"]) == (384, 384)
        index = slices["analysed_index"]
        decoded = Image.open(
            io.BytesIO(client.get(f"/api/studies/{status['id']}/slices/{index}", headers=AUTH).content)
        )
        assert decoded.mode in ("I;16", "I") and np.asarray(decoded).max() > 255, name
