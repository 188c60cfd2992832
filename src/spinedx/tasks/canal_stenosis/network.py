"""Stenosis network: a timm backbone on the posterior-margin crop, plus the disc level as a logit offset.

The crop (:func:`posterior_crops`) is a square centred on the posterior edge of the disc box at the
disc's height, ``crop_scale`` box widths wide: the posterior annulus, the canal and the posterior
elements, at a higher resolution than the whole-disc grader crop. The level one-hot enters the
final linear layer, so each level has its own bias: the level prior is an explicit logit offset the
image evidence moves up or down.

:meth:`StenosisNet.forward_with_maps` also returns the activations of the backbone stage at stride 16
(``evidence_maps``), for Grad-CAM; the bundled program is traced from it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinedx.data.crops import crop_box
from spinedx.errors import InputError
from spinedx.models.pretrained import load_pretrained

N_LEVELS = 10
"""Level one-hot size: ivd_label 0..9 (higher labels share 9)."""


def level_index(ivd_labels) -> np.ndarray:
    return np.clip(np.asarray(ivd_labels, dtype=np.int64).reshape(-1), 0, N_LEVELS - 1)


def posterior_crops(pixels: np.ndarray, boxes, size: int, scale: float) -> np.ndarray:
    """``(N, size, size)`` float32 crops in [0, 1] around each box's posterior edge, each normalised
    by its own 1st/99th intensity percentiles."""
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"canal stenosis: expected a 2-D image, got shape {image.shape}")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        image = (image - low) / max(high - low, 1e-6)
    crops = []
    for box in boxes:
        xmin, ymin, xmax, ymax = (float(v) for v in box)
        half = scale * (xmax - xmin) / 2.0
        centre_y = (ymin + ymax) / 2.0
        square = (xmax - half, centre_y - half, xmax + half, centre_y + half)
        crops.append(crop_box(image, square, size, 0.0).astype(np.float32))
    if not crops:
        return np.zeros((0, size, size), dtype=np.float32)
    crops = np.stack(crops)
    low_pct = np.percentile(crops, 1, axis=(1, 2), keepdims=True)
    high_pct = np.percentile(crops, 99, axis=(1, 2), keepdims=True)
    return np.clip((crops - low_pct) / np.maximum(high_pct - low_pct, 1e-3), 0.0, 1.0).astype(np.float32)


class StenosisNet(nn.Module):
    def __init__(self, backbone: str = "tf_efficientnet_lite0", *, pretrained: str = "none"):
        super().__init__()
        import timm  # here, not at import: analysis runs the traced program without timm

        if backbone not in timm.list_models():
            raise InputError(f"backbone: unknown timm model '{backbone}'")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="avg")
        self.weights_source = load_pretrained(self.backbone, backbone, pretrained)
        config = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.head = nn.Linear(self.backbone.num_features + N_LEVELS, 1)

    def forward(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` of ``(N, 1, S, S)`` crops in [0, 1] and their level indices."""
        features = self.backbone((images.expand(-1, 3, -1, -1) - self.mean) / self.std)
        return self._logits(features, levels)

    def forward_with_maps(
        self, images: torch.Tensor, levels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of :meth:`forward` and the stride-16 stage's activations ``(N, C, S/16, S/16)``."""
        stage = max(i for i, info in enumerate(self.backbone.feature_info) if info["reduction"] <= 16)
        final, (maps,) = self.backbone.forward_intermediates(
            (images.expand(-1, 3, -1, -1) - self.mean) / self.std, indices=[stage], intermediates_only=False
        )
        return self._logits(self.backbone.forward_head(final, pre_logits=True), levels), maps

    def _logits(self, features: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(levels.long().clamp(0, N_LEVELS - 1), N_LEVELS).to(features.dtype)
        return self.head(torch.cat([features, onehot], 1)).squeeze(1)


class WithEvidenceMaps(nn.Module):
    """``network.forward_with_maps`` as the module's forward: what the bundled program is traced from."""

    def __init__(self, network: StenosisNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.forward_with_maps(images, levels)
