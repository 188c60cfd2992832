"""Losses with class-imbalance handling (balanced class weights, as the thesis used)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.nn import functional


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """sklearn's 'balanced' weights, n / (k * count); classes absent from ``labels`` get weight 1."""
    weights = np.ones(n_classes, dtype=np.float32)
    present = np.unique(labels)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.from_numpy(weights)


class WeightedBinaryCrossEntropy(nn.Module):
    """BCE on a single logit (class 1 = positive) with per-class sample weights."""

    def __init__(self, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(2))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights[targets]
        return (
            functional.binary_cross_entropy_with_logits(
                logits[:, 0], targets.float(), weight=weights, reduction="sum"
            )
            / weights.sum()
        )


def build_loss(output: str, class_weights: torch.Tensor | None, label_smoothing: float = 0.0) -> nn.Module:
    if output == "sigmoid":
        return WeightedBinaryCrossEntropy(class_weights)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
