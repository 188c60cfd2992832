"""ROI classifier: a timm backbone with the thesis head (global average pooling -> Dense -> output)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from spinedx.errors import InputError
from spinedx.models.pretrained import load_pretrained

SUPPORTED_BACKBONES = (
    "vgg16",
    "resnet18",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
)


class RoiClassifier(nn.Module):
    """Input: (N, 3, H, W) float in [0, 1]. Output: logits (N, 1) for ``sigmoid`` or (N, C) for ``softmax``.

    ImageNet normalisation lives inside the model so every caller feeds plain [0, 1] pixels.
    """

    def __init__(
        self,
        backbone: str,
        n_classes: int,
        *,
        hidden: int = 64,
        dropout: float = 0.0,
        output: str = "softmax",
        pretrained: str = "none",
    ):
        super().__init__()
        if backbone not in timm.list_models():
            raise InputError(f"model.backbone: unknown timm model '{backbone}'")
        if output == "sigmoid" and n_classes != 2:
            raise InputError(
                f"model.output: 'sigmoid' needs exactly 2 classes, the label map gives {n_classes}"
            )
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        self.weights_source = load_pretrained(self.backbone, backbone, pretrained)
        config = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.output = output
        channels = self._feature_channels()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1 if output == "sigmoid" else n_classes),
        )

    def _feature_channels(self) -> int:
        # VGG's timm `num_features` counts its fc-as-conv layers, which we skip: probe the real map.
        with torch.no_grad():
            return self.backbone.forward_features(torch.zeros(1, 3, 64, 64)).shape[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features((images - self.mean) / self.std)
        return self.head(features)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) class probabilities whatever the output layer."""
        if self.output == "sigmoid":
            positive = torch.sigmoid(logits[:, 0])
            return torch.stack([1.0 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)

    def set_backbone_trainable(self, trainable: bool) -> None:
        for parameter in self.backbone.parameters():
            parameter.requires_grad = trainable
        self.train(self.training)

    def train(self, mode: bool = True) -> RoiClassifier:
        super().train(mode)
        # Frozen means frozen BatchNorm statistics too, as in Keras' `trainable=False`.
        if mode and not any(parameter.requires_grad for parameter in self.backbone.parameters()):
            self.backbone.eval()
        return self
