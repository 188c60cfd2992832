"""A tiny spine-seg training run on synthetic data via the CLI, evaluate-seg on it, and the
partial-label loss."""

import json

import pytest
import torch
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import InputError
from spinedx.io.masks import BACKGROUND, CANAL, DISC, IGNORE, VERTEBRA
from spinedx.tasks.spine_seg.train import PartialLabelLoss
from test_cli_bad_input import assert_clean_error, spinedx


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run with 2 synthetic patients, 64 px inputs, 2 epochs (CV is skipped: no real sources)."""
    folder = tmp_path_factory.mktemp("seg")
    recipe = folder / "tiny.yaml"
    recipe.write_text(
        "task: spine-seg\nname: tiny\nversion: test\nsynthetic_patients: 2\nsynthetic_test_patients: 1\n"
        "synthetic_size: 64\nimage_size: 64\nchannels: [4, 8, 16]\nnum_res_units: 0\nepochs: 2\n"
        "batch_size: 4\nbootstrap_resamples: 20\n"
    )
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_tiny_training_writes_model_and_synthetic_scores(tiny_run):
    assert (tiny_run / "spine_segmenter.pt").stat().st_size < 200_000
    metrics = json.loads((tiny_run / "synthetic_test" / "metrics.json").read_text())
    assert set(metrics["classes"]) == {"vertebra", "disc", "spinal_canal"}
    assert metrics["distance_unit"] == "mm"
    assert 0.0 <= metrics["classes"]["disc"]["dice"]["estimate"] <= 1.0


def test_evaluate_seg_cli_on_a_run(tiny_run, tmp_path):
    data = tiny_run / "synth-test"
    result = CliRunner().invoke(app, ["evaluate-seg", str(tiny_run), "--data", str(data), "--out", str(tmp_path),
                                      "--bootstrap", "20"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and "hd95" in metrics["classes"]["spinal_canal"]
    html = (tmp_path / "report.html").read_text()
    assert "worst" in html and "data:image/png;base64" in html and "http" not in html.split("<body>")[1]


def test_bad_recipe_value_is_an_input_error(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: spine-seg\nloss: focal\n")
    assert_clean_error(spinedx("train", recipe, "--out", tmp_path / "run"), "bad.yaml: field 'loss'")


def _logits(favoured: int, strength: float = 6.0) -> torch.Tensor:
    logits = torch.zeros(1, 4, 2, 2)
    logits[:, favoured] = strength
    return logits


def test_unlabelled_class_is_not_penalised_on_background_pixels():
    loss = PartialLabelLoss("ce")
    background = torch.full((1, 2, 2), BACKGROUND)
    canal_unlabelled = torch.tensor([[True, True, True, False]])
    all_labelled = torch.ones(1, 4, dtype=torch.bool)
    # Predicting canal where the mask says background costs nothing when canal is not labelled...
    assert loss(_logits(CANAL), background, canal_unlabelled) < 0.02
    # ...but is penalised when the mask labels canal, and predicting disc is penalised either way.
    assert loss(_logits(CANAL), background, all_labelled) > 5.0
    assert loss(_logits(DISC), background, canal_unlabelled) > 5.0


def test_dice_terms_only_for_labelled_classes_and_ignore_pixels_skipped():
    loss = PartialLabelLoss("dice")
    target = torch.tensor([[[VERTEBRA, VERTEBRA], [BACKGROUND, IGNORE]]])
    only_vertebra = torch.tensor([[True, True, False, False]])
    logits = torch.full((1, 4, 2, 2), -8.0)
    logits[0, VERTEBRA, 0, :] = 8.0
    logits[0, BACKGROUND, 1, 0] = 8.0
    logits[0, CANAL, 1, 1] = 8.0  # an ignored pixel: whatever is predicted there is free
    assert loss(logits, target, only_vertebra) < 0.01
    combined = PartialLabelLoss("dice_ce")(logits, target, only_vertebra)
    assert combined < 0.02


def test_background_far_from_the_spine_is_certain_only_for_partial_masks():
    import numpy as np

    from spinedx.tasks.spine_seg.data import SegSample
    from spinedx.tasks.spine_seg.train import CERTAIN_BACKGROUND, letterbox_sample

    labels = np.zeros((64, 64), np.uint8)
    labels[20:40, 10:20] = VERTEBRA
    pixels = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    partial = SegSample("a", "s", "s/a", pixels, labels, (VERTEBRA,), None)
    _, target, labelled = letterbox_sample(partial, 64, unlabelled_reach=0.25)
    assert labelled.tolist() == [True, True, False, False]
    assert target[30, 25] == BACKGROUND  # near the vertebra: may be disc or canal
    assert target[30, 60] == CERTAIN_BACKGROUND and target[30, 15] == VERTEBRA
    complete = SegSample("b", "s", "s/b", pixels, labels, (VERTEBRA, DISC, CANAL), None)
    assert not (letterbox_sample(complete, 64)[1] == CERTAIN_BACKGROUND).any()
    certain = torch.full((1, 2, 2), CERTAIN_BACKGROUND)
    assert PartialLabelLoss("ce")(_logits(CANAL), certain, torch.tensor([[True, True, True, False]])) > 5.0


def test_killed_training_resumes_after_its_last_epoch(tiny_run, tmp_path, monkeypatch):
    from spinedx.tasks.spine_seg import train as spine_seg
    from spinedx.tasks.spine_seg.config import parse_recipe
    from spinedx.tasks.spine_seg.data import load_seg_source
    from spinedx.training import loop
    from spinedx.training.checkpoints import load_checkpoint

    recipe = parse_recipe(json.loads((tiny_run / "recipe.json").read_text()), "recipe.json")
    recipe = recipe.model_copy(update={"epochs": 3})
    samples = load_seg_source(tiny_run / "synth-test")
    real_save = loop.save_checkpoint
    saved = []

    def save_then_die(path, state):
        real_save(path, state)
        saved.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        spine_seg.fit(samples, recipe, lambda _: None, tmp_path)
    lines = []
    spine_seg.fit(samples, recipe, lines.append, tmp_path)
    assert saved == [1, 2, 3] and "resuming after epoch 2" in lines
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    with pytest.raises(InputError, match="another recipe"):
        spine_seg.fit(samples, recipe.model_copy(update={"epochs": 5}), lambda _: None, tmp_path)
