"""The Grad-CAM sanity check: shares of heatmap mass in the disc region, trained vs randomised vs uniform."""

from __future__ import annotations

import json

import numpy as np
import torch

from spinedx import api
from spinedx.models.registry import resolve_weights
from spinedx.pipelines.mri_discs.evidence_check import disc_region, randomised
from spinedx.tasks.disc_grading.model import DiscGrader


def test_disc_region_reaches_past_the_posterior_side_and_stays_in_the_image():
    assert disc_region((10, 20, 30, 40), (100, 100)) == (10, 20, 40, 40)
    assert disc_region((80, 20, 99, 40), (100, 100)) == (80, 20, 100, 40)


def test_randomised_grader_has_new_weights_and_keeps_the_original():
    grader = DiscGrader.load(resolve_weights("disc_grader").path)
    before = {name: value.clone() for name, value in grader.model.state_dict().items()}
    random = randomised(grader, seed=0)
    changed = [
        name for name, value in random.model.state_dict().items()
        if value.dtype.is_floating_point and not torch.equal(value, before[name])
    ]  # fmt: skip
    assert len(changed) > 0.5 * len(before)
    assert all(torch.equal(value, before[name]) for name, value in grader.model.state_dict().items())


def test_evidence_check_reports_three_shares_with_intervals(tmp_path):
    data = api.synth_mri(tmp_path / "synth", n_patients=2, seed=5)
    result = api.evidence_check(data, tmp_path / "check.json", max_series=2, n_resamples=20)
    assert json.loads((tmp_path / "check.json").read_text()) == json.loads(json.dumps(result))
    assert result["n_discs"] > 5 and result["n_patients"] == 1
    for shares in (result, result["canal"]):  # the grader's heatmaps, and the bundled canal model's
        for name in ("trained", "randomised", "uniform"):
            share = shares[name]
            assert 0.0 <= share["lower"] <= share["estimate"] <= share["upper"] <= 1.0, name
        assert np.isfinite(shares["uniform"]["estimate"])


def test_evidence_check_split_scores_only_the_report_patients(tmp_path):
    data = api.synth_mri(tmp_path / "synth", n_patients=2, seed=5)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"spider/2": "report", "spider/1": "fit"}))
    result = api.evidence_check(data, tmp_path / "check.json", n_resamples=20, split=split)
    assert result["n_patients"] == 1 and result["n_discs"] > 5
