"""The feedback loop: correct findings through the API, `spinedx reviews export`, `spinedx train` on the
export, and the fine-tuned grader's Pfirrmann predictions on the corrected discs move toward the corrections.

The fine-tune starts from the bundled grader (``grader.init: bundled``), as a site would.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.io.images import read_image
from spinedx.io.spider import read_spider
from spinedx.serve.analysis import task_pipeline
from spinedx.serve.app import create_app
from spinedx.serve.settings import ServeSettings
from spinedx.tasks.disc_grading.model import DiscGrader
from test_serve_api import AUTH, TOKEN, upload, wait_done

CORRECTED_PFIRRMANN = 5
TINY_RECIPE = """task: mri-discs
name: review_finetune
version: "test"
localizer: {{data_root: {data}, epochs: 1, folds: 2, image_size: 64, synthetic_patients: 1, batch_size: 4,
  bootstrap_resamples: 0}}
grader: {{data_root: {data}, init: bundled, epochs: 4, folds: 2, batch_size: 8, lr: 0.003, warmup_epochs: 0,
  bootstrap_resamples: 0, threads: 1}}
"""


def expected_pfirrmann(grader: DiscGrader, pixels: np.ndarray, boxes: list, labels: list) -> np.ndarray:
    grades = grader.grade(pixels, boxes, labels)
    return np.array([np.dot(np.arange(1, 6), grade["pfirrmann"]["probabilities"]) for grade in grades])


@pytest.mark.slow
def test_corrections_exported_and_fine_tuned_move_predictions_toward_them(tmp_path):
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(tmp_path / "mri", n_patients=2, seed=8, image_size=(384, 384))
    data = tmp_path / "data"
    rejected = None
    with TestClient(create_app(ServeSettings(data_dir=data, token=TOKEN))) as client:
        ids = [
            upload(client, path.read_bytes(), path.name).json()["id"]
            for path in sorted(root.glob("images/*.png"))
        ]
        for study_id in ids:
            assert wait_done(client, study_id)["status"] == "done"
            state = client.get(f"/api/studies/{study_id}/state", headers=AUTH).json()["findings"]
            decisions = [
                {"finding": item["finding"], "action": "correct", "value": CORRECTED_PFIRRMANN}
                if item["finding"].endswith(":pfirrmann")
                else {"finding": item["finding"], "action": "accept"}
                for item in state
            ]
            if rejected is None:  # the first study's top disc is not a disc: left out of the export
                rejected = (study_id, state[-1]["finding"].split(":")[0])
                decisions.append({"finding": f"{rejected[1]}:disc", "action": "reject"})
            response = client.post(
                f"/api/studies/{study_id}/reviews",
                headers=AUTH,
                json={"reviewer": "dr.a", "decisions": decisions},
            )
            assert response.status_code == 201 and response.json()["study"]["reviewed"]

    export = tmp_path / "export"
    result = CliRunner().invoke(cli, ["reviews", "export", "--out", str(export), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "wrote 4 reviewed studies" in result.output and "1 rejected or ungraded" in result.output
    exported = read_spider(export)  # the layout the trainers read, with all its checks
    assert set(exported.series["image_id"]) == set(ids)
    assert (exported.discs["pfirrmann"] == CORRECTED_PFIRRMANN).all()
    assert rejected[1] not in set(exported.discs.loc[exported.discs["image_id"] == rejected[0], "level"])

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.format(data=export))
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    fine_tuned = DiscGrader.load(tmp_path / "run" / "grader" / "disc_grader.pt")
    bundled = task_pipeline("mri-discs").grader

    before, after = [], []
    for image_id, rows in exported.discs.groupby("image_id"):
        pixels = read_image(exported.image_path(image_id)).pixels
        boxes = [tuple(box) for box in rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy()]
        labels = rows["ivd_label"].tolist()
        before.append(expected_pfirrmann(bundled, pixels, boxes, labels))
        after.append(expected_pfirrmann(fine_tuned, pixels, boxes, labels))
    error_before = np.abs(np.concatenate(before) - CORRECTED_PFIRRMANN).mean()
    error_after = np.abs(np.concatenate(after) - CORRECTED_PFIRRMANN).mean()
    assert error_after < error_before - 0.5, (error_before, error_after)
