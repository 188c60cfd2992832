"""Training recipes: validated YAML configs, saved with every run so each figure can be reproduced."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spinedx.errors import InputError

RecipeT = TypeVar("RecipeT", bound=BaseModel)

Monitor = Literal["val_macro_f1", "val_balanced_accuracy", "val_accuracy", "val_loss"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CropConfig(_Strict):
    size: int = Field(128, ge=16, le=1024, description="side of the square crop fed to the network, px")
    margin: float = Field(
        0.1, ge=0.0, le=2.0, description="context added on each side, as a fraction of the box"
    )


class SplitConfig(_Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9)
    seed: int = 42
    group_by: str = "study_id"


class AugmentConfig(_Strict):
    rotation_deg: float = Field(10.0, ge=0.0, le=180.0)
    zoom: float = Field(0.1, ge=0.0, lt=1.0)
    translate: float = Field(0.0, ge=0.0, lt=0.5)
    hflip: bool = True
    brightness: float = Field(0.0, ge=0.0, lt=1.0)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)


class DataConfig(_Strict):
    csv: Path = Path("data/synth-xray/annotations.csv")
    images: Path = Path("data/synth-xray/images")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"Osteophytes": "Osteophytes", "*": "minor"},
        description="lesion type -> class; '*' maps every other lesion type; omit '*' to drop the rest",
    )
    crop: CropConfig = CropConfig()
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()


class ModelConfig(_Strict):
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field("imagenet", description="'imagenet', 'none', or a path to a .pth state dict")
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    output: Literal["softmax", "sigmoid"] = "softmax"


class TrainConfig(_Strict):
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


class ExperimentConfig(_Strict):
    name: str
    seed: int = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("must be a non-empty name without '/'")
        return value


def _apply_override(raw: dict, override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise InputError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=3")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {override!r}: '{part}' is not a section")
    node[leaf] = yaml.safe_load(value)


def read_recipe(path: Path, overrides: list[str] | None = None) -> dict:
    """The YAML recipe at ``path`` as a dict, with ``section.key=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    for override in overrides or []:
        _apply_override(raw, override)
    return raw


def load_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a radiograph-classifier recipe; ``overrides`` are ``section.key=value`` strings."""
    return parse_config(read_recipe(path, overrides), source=str(path))


def validate_recipe(model: type[RecipeT], raw: dict, source: str = "config") -> RecipeT:
    """``raw`` validated as ``model``; the first problem becomes an InputError naming the field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InputError(f"{source}: field '{field}': {first['msg']}") from exc


def parse_config(raw: dict, source: str = "config") -> ExperimentConfig:
    return validate_recipe(ExperimentConfig, raw, source)


def config_to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
