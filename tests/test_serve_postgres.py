"""The review service on a real PostgreSQL server (Debian's binaries, a throwaway cluster on loopback)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from postgres_server import postgres_bin, postgres_server
from spinedx import api
from spinedx.serve.app import create_app
from spinedx.serve.settings import ServeSettings
from test_serve_api import AUTH, TOKEN, upload, wait_done

pytestmark = pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL server binaries not installed")


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def test_upload_review_and_export_on_postgresql(postgres_url, tmp_path):
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(tmp_path / "mri", n_patients=1, seed=5, image_size=(384, 384))
    settings = ServeSettings(data_dir=tmp_path / "data", token=TOKEN, db_url=postgres_url)
    with TestClient(create_app(settings)) as client:
        study_id = upload(client, (root / "images" / "1_t1.png").read_bytes()).json()["id"]
        assert wait_done(client, study_id)["status"] == "done"
        state = client.get(f"/api/studies/{study_id}/state", headers=AUTH).json()["findings"]
        decisions = [{"finding": item["finding"], "action": "accept"} for item in state]
        decisions[0] = {"finding": state[0]["finding"], "action": "reject", "comment": "not a disc"}
        response = client.post(
            f"/api/studies/{study_id}/reviews",
            headers=AUTH,
            json={"reviewer": "dr.pg", "decisions": decisions},
        )
        assert response.status_code == 201 and response.json()["study"]["reviewed"]
        history = client.get(f"/api/studies/{study_id}/reviews", headers=AUTH).json()
        assert history[0]["finding"] == state[0]["finding"] and history[0]["after"] is False
    # A second process (here: the export) sees the same data through the URL alone.
    summary = api.export_reviews(tmp_path / "export", db=postgres_url, data_dir=tmp_path / "data")
    assert summary.studies == 1 and summary.skipped_discs == 1
