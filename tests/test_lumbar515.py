"""The second cohort's importer, its end-to-end evaluation and the canal stenosis trainer, on a synthetic
folder laid out like lumbar515-sagittal (and on the real one when ../shared/data has it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spinedx import api
from spinedx.errors import InputError
from spinedx.io.lumbar515 import is_lumbar515, read_lumbar515
from spinedx.models.model_file import save_model_file
from spinedx.models.program import trace_program
from spinedx.tasks.canal_stenosis.model import FORMAT as CANAL_FORMAT
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.canal_stenosis.network import StenosisNet

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "lumbar515-sagittal"


@pytest.fixture(scope="module")
def cohort(lumbar515_cohort) -> Path:
    return lumbar515_cohort


def test_importer_gives_per_disc_grades_and_masks_what_the_cohort_lacks(cohort):
    assert is_lumbar515(cohort)
    dataset = read_lumbar515(cohort)
    discs = dataset.discs
    assert len(dataset.series) == 12 and len(discs) > 50
    assert discs.loc[discs["label"] == "ddd", "bulging"].isna().all()  # one label per box: not "no bulge"
    assert discs.loc[discs["label"] == "lumbar_bulge", "degenerated"].isna().all()
    assert (discs.loc[discs["label"] == "lumbar_bulge", "stenosis"] == 1).all()
    assert (discs.loc[discs["label"] == "normal", "stenosis"] == 0).all()
    lower = discs["level"].isin(["L3/L4", "L4/L5", "L5/S1"])
    assert discs.loc[lower, "pfirrmann"].notna().all() and discs.loc[~lower, "pfirrmann"].isna().all()
    assert (discs["ivd_label"].dropna() >= 1).all()


def test_importer_names_the_row_and_column_of_a_bad_label(cohort, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("series.csv", "pfirrmann.csv"):
        (broken / name).write_bytes((cohort / name).read_bytes())
    (broken / "images").symlink_to(cohort / "images")
    lines = (cohort / "boxes.csv").read_text().splitlines()
    lines[3] = (
        lines[3]
        .replace("normal", "herniated")
        .replace("lumbar_bulge", "herniated")
        .replace("ddd", "herniated")
    )
    (broken / "boxes.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"boxes.csv row 4 column 'label': 'herniated'"):
        read_lumbar515(broken)


def test_evaluate_discs_scores_a_lumbar515_folder_beside_the_level_prior(cohort, tmp_path):
    result = api.evaluate_discs(cohort, tmp_path / "eval", n_resamples=20)
    metrics = json.loads(result.metrics_path.read_text())
    localisation = metrics["localisation"]
    assert localisation["n_series"] == 12 and localisation["disc_recall_centre_in_box"]["estimate"] > 0.8
    grading = metrics["grading"]
    assert {"bulging", "degeneration", "pfirrmann", "pfirrmann_fused"} <= set(grading)
    assert grading["pfirrmann_fused"]["mean_series_per_level"] > 1.5  # t1 and t2 of each patient
    assert np.isfinite(grading["bulging"]["level_prior"]["estimate"])
    assert "Level-only prior" in result.report_path.read_text()
    # Which patients each bundled model saw is read from its own training config.
    assert "the localiser never saw this cohort" in metrics["models"]
    assert "the grader trained on it except the report patients" in metrics["models"]


def test_stenosis_trainer_cross_validates_calibrates_and_resumes(cohort, tmp_path):
    config = tmp_path / "stenosis.yaml"
    config.write_text(
        f"task: canal-stenosis\ndata_root: {cohort}\npretrained: none\nbackbone: resnet10t\n"
        "crop_size: 32\nepochs: 1\nfolds: 2\nbatch_size: 16\nbootstrap_resamples: 20\n"
    )
    paths = api.train(config, tmp_path / "run")
    metrics = json.loads(paths["cv_metrics"].read_text())
    assert metrics["n_discs"] > 40 and 0 < metrics["n_positive"] < metrics["n_discs"]
    assert {"model", "level_prior"} <= set(metrics) and "auroc" in metrics["model"]
    for fold in range(2):
        assert (tmp_path / "run" / "cv" / f"fold_{fold}" / "model.pt").is_file()
    model = CanalStenosis.load(paths["canal_stenosis"])
    pixels = np.random.default_rng(0).random((320, 320)).astype(np.float32)
    probabilities = model.probabilities(pixels, [(100, 100, 150, 120), (90, 130, 150, 150)], [1, 2])
    assert probabilities.shape == (2,) and ((probabilities > 0) & (probabilities < 1)).all()
    again = api.train(config, tmp_path / "run")  # every fold finished: resumes past them, same figures
    assert json.loads(again["cv_metrics"].read_text())["model"] == metrics["model"]
    config.write_text(config.read_text().replace("crop_size: 32", "crop_size: 48"))
    with pytest.raises(InputError, match="from another recipe or other data"):
        api.train(config, tmp_path / "run")


def test_canal_evidence_is_grad_cam_inside_the_posterior_crop_and_survives_compiling(tmp_path):
    torch.manual_seed(0)
    network = StenosisNet("resnet10t").eval()
    with torch.no_grad():  # a logit rising with the pooled features, so random weights give a non-empty map
        network.head.weight.abs_()
    state = {"format": CANAL_FORMAT, "architecture": {"backbone": "resnet10t"}, "state_dict": network.state_dict(),
             "crop": {"size": 32, "scale": 1.3}, "calibration": {"a": 1.0, "b": 0.0}, "threshold": 0.5}  # fmt: skip
    path = save_model_file(tmp_path / "canal.pt", state)
    pixels = np.random.default_rng(0).random((200, 200)).astype(np.float32)
    boxes, labels = [(100.0, 100.0, 150.0, 120.0), (90.0, 130.0, 150.0, 150.0)], [1, 2]
    eager = CanalStenosis.load(path)
    heatmaps = eager.evidence(pixels, boxes, labels)
    assert eager.has_evidence and len(heatmaps) == 2 and heatmaps[0].shape == pixels.shape
    assert heatmaps[0].max() == pytest.approx(1.0, abs=0.02)
    assert heatmaps[0][:, :115].max() == 0.0 and heatmaps[0][:75].max() == 0.0  # only the crop's square
    compiled = CanalStenosis.load(eager.compile(path))
    assert compiled.has_evidence
    np.testing.assert_allclose(
        compiled.logits(pixels, boxes, labels), eager.logits(pixels, boxes, labels), atol=1e-4
    )
    np.testing.assert_allclose(compiled.evidence(pixels, boxes, labels)[0], heatmaps[0], atol=1e-3)
    # A file compiled before the evidence maps: logits as ever, and one clear error for evidence.
    state["program"] = trace_program(network, (torch.rand(2, 1, 32, 32), torch.tensor([1, 2])))
    old = CanalStenosis.load(save_model_file(tmp_path / "old.pt", state))
    assert not old.has_evidence
    np.testing.assert_allclose(
        old.logits(pixels, boxes, labels), eager.logits(pixels, boxes, labels), atol=1e-4
    )
    with pytest.raises(InputError, match="without evidence maps"):
        old.evidence(pixels, boxes, labels)


@pytest.mark.real_data
@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/data/lumbar515-sagittal")
def test_real_lumbar515_imports():
    dataset = read_lumbar515(REAL)
    assert len(dataset.series) == 607 and dataset.discs["patient"].nunique() == 304
    assert dataset.discs["stenosis"].sum() > 1000
