"""Load a trained run and classify regions of interest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from spinedx.data.crops import crop_box
from spinedx.data.datasets import crops_to_batch
from spinedx.models.model_file import read_weights_file
from spinedx.tasks.xray_lesions.config import ExperimentConfig, parse_config
from spinedx.tasks.xray_lesions.network import RoiClassifier

BEST = "best.pt"
"""The run's checkpoint of its best validation epoch: what prediction and evaluation load."""


def build_model(config: ExperimentConfig, n_classes: int, pretrained: str | None = None) -> RoiClassifier:
    """The classifier network a recipe describes (``pretrained`` overrides the recipe's weights)."""
    model_config = config.model
    return RoiClassifier(
        model_config.backbone,
        n_classes,
        hidden=model_config.hidden,
        dropout=model_config.dropout,
        output=model_config.output,
        pretrained=model_config.pretrained if pretrained is None else pretrained,
    )


@dataclass
class TrainedClassifier:
    model: RoiClassifier
    config: ExperimentConfig
    class_names: list[str]
    epoch: int

    @classmethod
    def load(cls, run_dir: Path) -> TrainedClassifier:
        """The best checkpoint of ``run_dir`` (raises InputError when the run has none)."""
        state = read_weights_file(Path(run_dir) / BEST, "checkpoint")
        config = parse_config(yaml.safe_load(state["config_yaml"]), source=str(Path(run_dir) / BEST))
        model = build_model(config, len(state["class_names"]), pretrained="none")
        model.load_state_dict(state["model"])
        model.eval()
        return cls(model, config, list(state["class_names"]), int(state["epoch"]))

    @torch.no_grad()
    def predict_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, S, S) uint8 crops -> (N, C) class probabilities."""
        if len(crops) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        outputs = [
            self.model.probabilities(self.model(crops_to_batch(crops[start : start + batch_size])))
            for start in range(0, len(crops), batch_size)
        ]
        return torch.cat(outputs).numpy()

    def crop(self, pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """Crop ``box`` from a [0, 1] image exactly as training did."""
        crop_config = self.config.data.crop
        return crop_box(pixels, box, crop_config.size, crop_config.margin)
