"""Security of the review service: token, size limits, zip-slip and zip bombs, no PHI kept, no stack traces."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from spinedx.errors import InputError
from spinedx.serve.app import create_app
from spinedx.serve.runner import resolve_token
from spinedx.serve.settings import ServeSettings
from spinedx.serve.uploads import UploadLimits
from spinedx.store import Base, open_store
from test_serve_api import AUTH, PATIENT_ID, PATIENT_NAME, TOKEN, dicom_bytes, upload, wait_done

LIMITS = UploadLimits(max_upload_bytes=600_000, max_archive_files=20, max_archive_bytes=3_000_000)


@pytest.fixture(scope="module")
def slice_png(tmp_path_factory) -> bytes:
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(tmp_path_factory.mktemp("mri"), n_patients=1, seed=11, image_size=(384, 384))
    return (root / "images" / "1_t2.png").read_bytes()


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "data"
    with TestClient(
        create_app(ServeSettings(data_dir=data, token=TOKEN, limits=LIMITS)), raise_server_exceptions=False
    ) as client:
        yield client, data


def stored_studies(data: Path) -> list[Path]:
    folder = data / "studies"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_api_needs_the_token(served):
    client, _ = served
    for method, path in (("get", "/api/studies"), ("get", "/api/agreement"), ("post", "/api/studies")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = getattr(client, method)(path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"detail": "missing or wrong token"}
    assert client.get("/api/studies", headers=AUTH).status_code == 200
    assert client.get("/docs").status_code == 200  # OpenAPI is public; the data behind it is not


def test_no_token_refuses_a_non_loopback_host():
    with pytest.raises(InputError, match="SPINEDX_TOKEN"):
        resolve_token("0.0.0.0", {})
    with pytest.raises(InputError, match="SPINEDX_TOKEN"):
        resolve_token("192.168.1.5", {})
    token, generated = resolve_token("127.0.0.1", {})
    assert generated and len(token) >= 24
    assert resolve_token("0.0.0.0", {"SPINEDX_TOKEN": "s3cret"}) == ("s3cret", False)


def test_oversized_upload_is_413_and_nothing_is_stored(served):
    client, data = served
    response = upload(client, b"\x89PNG\r\n\x1a\n" + bytes(2_000_000))
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    response = upload(client, b"\x89PNG\r\n\x1a\n" + bytes(LIMITS.max_upload_bytes))  # within the body slack
    assert response.status_code == 413
    assert stored_studies(data) == [] and client.get("/api/studies", headers=AUTH).json() == []
    assert not any((data / "incoming").iterdir())


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_zip_slip_is_rejected_with_nothing_written_outside(served, slice_png, tmp_path):
    client, data = served
    image = dicom_bytes(slice_png)
    for evil in (
        "../../escaped.dcm",
        "/tmp/escaped-spinedx.dcm",
        "a/../../../escaped.dcm",
        "..\\..\\escaped.dcm",
    ):
        response = upload(client, _zip({"ok.dcm": image, evil: image}), "study.zip")
        assert response.status_code == 400 and "zip" in response.json()["detail"], evil
    escaped = [path for path in tmp_path.rglob("escaped*")] + list(Path("/tmp").glob("escaped-spinedx*"))
    assert escaped == []
    assert stored_studies(data) == []


def test_zip_bombs_are_refused(served):
    client, data = served
    bomb = _zip({"zeros.dcm": bytes(50_000_000)})  # 50 MB of zeros, ~50 kB compressed
    assert len(bomb) < LIMITS.max_upload_bytes
    response = upload(client, bomb, "study.zip")
    assert response.status_code == 413 and "unpacks to more than" in response.json()["detail"]
    many = _zip({f"{k}.dcm": b"x" for k in range(LIMITS.max_archive_files + 1)})
    response = upload(client, many, "study.zip")
    assert response.status_code == 413 and "more than 20 files" in response.json()["detail"]
    assert stored_studies(data) == []


def test_patient_identifiers_reach_no_table_log_report_findings_or_export(
    served, slice_png, tmp_path, caplog
):
    client, data = served
    caplog.set_level(logging.DEBUG)
    response = upload(client, dicom_bytes(slice_png), f"{PATIENT_NAME}_{PATIENT_ID}.dcm")
    assert response.status_code == 202
    study_id = response.json()["id"]
    status = wait_done(client, study_id)
    assert status["status"] == "done", status["error"]
    state = client.get(f"/api/studies/{study_id}/state", headers=AUTH).json()["findings"]
    decisions = [{"finding": item["finding"], "action": "accept"} for item in state]
    assert (
        client.post(
            f"/api/studies/{study_id}/reviews",
            headers=AUTH,
            json={"reviewer": "dr.a", "decisions": decisions},
        ).status_code
        == 201
    )

    from spinedx import api

    export = tmp_path / "export"
    summary = api.export_reviews(export, data_dir=data)
    assert summary.studies == 1 and summary.discs > 0

    secrets = [PATIENT_NAME, PATIENT_NAME.replace("^", " "), "Jane", PATIENT_ID, "19700101"]
    store = open_store(None, data)
    with store.engine.connect() as connection:
        dump = "\n".join(
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in connection.execute(text(f"SELECT * FROM {table.name}"))
        )
    store.close()
    assert study_id in dump
    texts = {
        "database": dump,
        "logs": caplog.text,
        "report": client.get(f"/api/studies/{study_id}/report", headers=AUTH).text,
        "findings": client.get(f"/api/studies/{study_id}/findings", headers=AUTH).text,
        "study list": client.get("/api/studies", headers=AUTH).text,
    }
    # Every byte kept: the stored (de-identified) input, the results, the SQLite file, the export.
    for root in (data, export):
        for path in root.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    for where, content in texts.items():
        for secret in secrets:
            assert secret not in content, f"{secret!r} found in {where}"


def test_internal_errors_answer_a_generic_500_without_details(served, monkeypatch, caplog, slice_png):
    client, _ = served
    import spinedx.serve.app as app_module

    def broken(_session):
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr(app_module, "agreement", broken)
    response = client.get("/api/agreement", headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert "RuntimeError" in caplog.text  # the details go to the log


def test_cli_refuses_a_non_loopback_host_without_token(monkeypatch, tmp_path, capsys):
    from spinedx.cli import main

    monkeypatch.delenv("SPINEDX_TOKEN", raising=False)
    monkeypatch.setattr("sys.argv", ["spinedx", "serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --host 0.0.0.0: set SPINEDX_TOKEN before serving on an address other than loopback"
    )
    assert not (tmp_path / "d").exists()
