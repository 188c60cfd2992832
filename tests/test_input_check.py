"""The input check: tiny training on synthetic sources, verdict warnings, and the pipeline gate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from spinedx.io.volumes import SagittalSlice
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.tasks.input_check.model import InputCheck
from spinedx.tasks.input_check.network import INPUT_CLASSES
from spinedx.tasks.input_check.train import InputCheckConfig, train_input_check


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory, tiny_xray):
    from spinedx.synth.mri import generate_mri_dataset

    torch.set_num_threads(1)
    mri = generate_mri_dataset(
        tmp_path_factory.mktemp("mri"), n_patients=6, seed=4, image_size=(128, 128), pixel_spacing_mm=2.0
    )
    config = InputCheckConfig(
        positives=[mri],
        negatives=[tiny_xray],
        synthetic_mri_patients=0,
        synthetic_xray_images=0,
        procedural_images=12,
        max_per_folder=12,
        image_size=64,
        folds=2,
    )
    out = tmp_path_factory.mktemp("check")
    return train_input_check(config, out, log=lambda _: None), out, mri


def test_training_writes_grouped_cv_metrics_and_a_loadable_check(tiny_check):
    path, out, mri = tiny_check
    metrics = json.loads((out / "cv_metrics.json").read_text())
    # 12 MR slices x (as stored + 3 rotations) + 12 radiographs + 12 procedural images.
    assert metrics["n_images"] == 12 * 4 + 12 + 12
    assert set(metrics["recall_per_class"]) == set(INPUT_CLASSES)
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["n_images"]
    variants = {(row["source"], row["variant"]) for row in metrics["by_source_and_variant"]}
    assert (str(mri), "rot90") in variants and ("procedural", "as stored") in variants
    check = InputCheck.load(path)
    verdict = check.check(np.random.default_rng(0).random((100, 80)).astype(np.float32))
    assert set(verdict.probabilities) == set(INPUT_CLASSES)
    assert sum(verdict.probabilities.values()) == pytest.approx(1.0, abs=1e-3)


def _forced(check: InputCheck, winner: int) -> InputCheck:
    """The same check with its head rigged so that class ``winner`` gets ~all the probability."""
    with torch.no_grad():
        check.network.head.linear.weight.zero_()
        check.network.head.linear.bias.fill_(0.0)
        check.network.head.linear.bias[winner] = 20.0
    return check


@pytest.mark.parametrize(
    ("winner", "expected", "refused"),
    [
        (0, None, False),
        (1, "looks rotated or mirrored", False),
        (2, "does not look like a sagittal spine MR slice (P = 1.00): not analysed", True),
    ],
)
def test_verdict_warnings(tiny_check, winner, expected, refused):
    check = _forced(InputCheck.load(tiny_check[0]), winner)
    verdict = check.check(np.zeros((50, 50), dtype=np.float32) + 0.5)
    assert verdict.refuse is refused
    assert (verdict.warnings == []) if expected is None else expected in verdict.warnings[0]


def test_pipeline_skips_a_refused_slice(tiny_check):
    from test_analyze import StubGrader, StubLocalizer

    check = _forced(InputCheck.load(tiny_check[0]), 2)
    pipeline = MriDiscPipeline(StubLocalizer(), StubGrader(), "test", input_check=check)
    image = SagittalSlice(
        np.random.default_rng(1).random((64, 64)), Path("noise.png"), None, None, None, None, None
    )
    findings = pipeline.analyze(image, "noise")
    assert findings.discs == []
    assert findings.input_check["other"] == pytest.approx(1.0, abs=1e-3)
    assert any("not analysed" in warning for warning in findings.warnings)
    accepted = pipeline.__class__(StubLocalizer(), StubGrader(), "test", input_check=_forced(check, 0))
    assert len(accepted.analyze(image, "slice").discs) == 3


@pytest.mark.skipif(not (SHARED_DATA / "spider-sagittal").is_dir(), reason="needs ../shared/data")
def test_bundled_check_accepts_spider_slices_and_refuses_radiographs():
    from spinedx.io.volumes import read_sagittal

    check = InputCheck.bundled()
    spider = sorted((SHARED_DATA / "spider-sagittal" / "images").glob("*.png"))[:6]
    verdicts = [check.check(read_sagittal(path).pixels) for path in spider]
    assert sum(v.probabilities["sagittal_spine_mr"] > 0.5 for v in verdicts) >= 5
    xray = sorted((SHARED_DATA / "xray-vertebrae-ap" / "valid" / "images").glob("*.jpg"))[:3]
    assert all(check.check(read_sagittal(path).pixels).refuse for path in xray)
    turned = check.check(np.rot90(read_sagittal(spider[0]).pixels).copy())
    assert "rotated or mirrored" in turned.warnings[0]


def test_load_rejects_other_and_damaged_files(tiny_check, tmp_path):
    from spinedx.errors import InputError
    from spinedx.training.checkpoints import load_checkpoint, save_checkpoint

    state = load_checkpoint(tiny_check[0])
    save_checkpoint(tmp_path / "other.pt", {"format": "something else"})
    with pytest.raises(InputError, match="not an input-check file"):
        InputCheck.load(tmp_path / "other.pt")
    del state["head"]
    save_checkpoint(tmp_path / "damaged.pt", state)
    with pytest.raises(InputError, match="damaged input-check file"):
        InputCheck.load(tmp_path / "damaged.pt")
