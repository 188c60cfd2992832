"""Recipes, label maps, crops, grouped splits and losses."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinedx.data.crops import crop_box
from spinedx.data.labels import LabelMap
from spinedx.data.splits import grouped_split
from spinedx.errors import InputError
from spinedx.tasks.xray_lesions.config import load_config
from spinedx.training.losses import WeightedBinaryCrossEntropy, balanced_class_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["thesis.yaml", "xray_lesions.yaml"])
def test_shipped_recipes_validate(name):
    config = load_config(CONFIGS / name)
    assert config.name == Path(name).stem
    assert config.data.labels == {"Osteophytes": "Osteophytes", "*": "minor"}


def test_thesis_recipe_matches_the_thesis():
    config = load_config(CONFIGS / "thesis.yaml")
    assert config.model.backbone == "vgg16"
    assert config.model.output == "sigmoid" and config.model.hidden == 64
    assert config.train.freeze_backbone_epochs == -1 and config.train.epochs == 10
    assert config.data.crop.size == 128 and config.data.split.seed == 42
    assert config.train.class_balance == "weights" and config.train.monitor == "val_accuracy"


def test_overrides_and_bad_values(tmp_path):
    config = load_config(CONFIGS / "thesis.yaml", ["train.epochs=3", "model.pretrained=none"])
    assert config.train.epochs == 3
    with pytest.raises(InputError, match="field 'train.epochs'"):
        load_config(CONFIGS / "thesis.yaml", ["train.epochs=0"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        load_config(CONFIGS / "thesis.yaml", ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epoch: 3}\n")
    with pytest.raises(InputError, match="field 'train.epoch'"):
        load_config(bad)
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_label_map_binary_merge():
    label_map = LabelMap({"Osteophytes": "Osteophytes", "*": "minor"})
    rows = pd.DataFrame({"lesion_type": ["Osteophytes", "Surgical implant", "Vertebral collapse"]})
    mapped = label_map.apply(rows)
    assert mapped["class_name"].tolist() == ["Osteophytes", "minor", "minor"]
    assert mapped["label"].tolist() == [0, 1, 1]


def test_label_map_drops_unmapped_and_rejects_one_class():
    label_map = LabelMap({"Osteophytes": "a", "Surgical implant": "b"})
    mapped = label_map.apply(pd.DataFrame({"lesion_type": ["Osteophytes", "Other lesions"]}))
    assert mapped["class_name"].tolist() == ["a"]
    with pytest.raises(InputError, match="one class"):
        LabelMap({"*": "all"})


def test_crop_box_is_square_and_pads_outside():
    pixels = np.zeros((100, 200), dtype=np.float32)
    pixels[40:60, 90:110] = 1.0
    crop = crop_box(pixels, (90, 40, 110, 60), size=32, margin=0.0)
    assert crop.shape == (32, 32) and crop.dtype == np.uint8
    assert crop.min() >= 250
    corner = crop_box(pixels, (-10, -10, 10, 10), size=16, margin=0.0)
    assert corner[:7, :7].max() == 0  # outside the image is zero-padded, not wrapped


def test_grouped_split_keeps_studies_together():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"study_id": [f"s{i // 3}" for i in range(300)], "label": rng.integers(0, 2, 300)})
    split = grouped_split(rows, test_fraction=0.2, val_fraction=0.1, seed=42)
    per_study = pd.DataFrame({"study": rows["study_id"], "split": split}).groupby("study")["split"].nunique()
    assert (per_study == 1).all()
    shares = split.value_counts(normalize=True)
    assert 0.13 < shares["test"] < 0.27 and 0.05 < shares["val"] < 0.16
    assert split.equals(grouped_split(rows, test_fraction=0.2, val_fraction=0.1, seed=42))


def test_grouped_split_needs_enough_studies():
    rows = pd.DataFrame({"study_id": ["a", "a", "b"], "label": [0, 1, 0]})
    with pytest.raises(InputError, match="too few"):
        grouped_split(rows, test_fraction=0.2, val_fraction=0.1, seed=0)


def test_balanced_weights_and_weighted_bce():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert torch.allclose(weights, torch.tensor([4 / 6, 4 / 2]))
    loss = WeightedBinaryCrossEntropy(weights)
    logits = torch.zeros(4, 1)
    assert torch.isclose(loss(logits, torch.tensor([0, 0, 0, 1])), torch.log(torch.tensor(2.0)))


def test_spider_discs_recipe_validates():
    from spinedx.recipes import read_recipe
    from spinedx.tasks.mri_discs.config import parse_recipe

    recipe = parse_recipe(read_recipe(CONFIGS / "spider_discs.yaml"), "spider_discs.yaml")
    assert recipe.task == "mri-discs" and recipe.localizer.folds == 5 and recipe.grader.folds == 5
    with pytest.raises(InputError, match="field 'grader.epochs'"):
        parse_recipe(read_recipe(CONFIGS / "spider_discs.yaml", ["grader.epochs=0"]), "spider_discs.yaml")
