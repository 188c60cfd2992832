"""The radiograph lesion classifier's recipe (``task: xray-lesions``), saved with every run so each figure can be reproduced."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from spinedx.recipes import Recipe, Strict, read_recipe, validate_recipe

TASK = "xray-lesions"

Monitor = Literal["val_macro_f1", "val_balanced_accuracy", "val_accuracy", "val_loss"]


class CropConfig(Strict):
    size: int = Field(128, ge=16, le=1024, description="side of the square crop fed to the network, px")
    margin: float = Field(
        0.1, ge=0.0, le=2.0, description="context added on each side, as a fraction of the box"
    )


class SplitConfig(Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9)
    seed: int = 42
    group_by: str = "study_id"


class AugmentConfig(Strict):
    rotation_deg: float = Field(10.0, ge=0.0, le=180.0)
    zoom: float = Field(0.1, ge=0.0, lt=1.0)
    translate: float = Field(0.0, ge=0.0, lt=0.5)
    hflip: bool = True
    brightness: float = Field(0.0, ge=0.0, lt=1.0)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)


class DataConfig(Strict):
    csv: Path = Path("data/synth-xray/annotations.csv")
    images: Path = Path("data/synth-xray/images")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"Osteophytes": "Osteophytes", "*": "minor"},
        description="lesion type -> class; '*' maps every other lesion type; omit '*' to drop the rest",
    )
    crop: CropConfig = CropConfig()
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()


class ModelConfig(Strict):
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field("imagenet", description="'imagenet', 'none', or a path to a .pth state dict")
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    output: Literal["softmax", "sigmoid"] = "softmax"


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    backbone_lr: float = Field(1e-4, ge=0.0, description="learning rate of the backbone once unfrozen")
    weight_decay: float = Field(0.0, ge=0.0)
    scheduler: Literal["none", "cosine"] = "none"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    freeze_backbone_epochs: int = Field(0, ge=-1, description="-1 keeps the backbone frozen throughout")
    class_balance: Literal["weights", "sampler", "none"] = "weights"
    early_stopping_patience: int = Field(0, ge=0, description="0 disables early stopping")
    monitor: Monitor = "val_macro_f1"
    channels_last: bool = False
    deterministic: bool = False
    threads: int | None = Field(None, ge=1)


class ExperimentConfig(Recipe):
    """Recipe of the radiograph ROI classifier (``task: xray-lesions``, the default for recipes without ``task``)."""

    task: Literal["xray-lesions"] = TASK
    seed: int = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def load_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a radiograph-classifier recipe; ``overrides`` are ``section.key=value`` strings."""
    return parse_config(read_recipe(path, overrides), source=str(path))


def parse_config(raw: dict, source: str = "config") -> ExperimentConfig:
    return validate_recipe(ExperimentConfig, raw, source)
