"""Training-time augmentation of grayscale crops (torchvision transforms v2, on tensors)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from spinedx.tasks.xray_lesions.config import AugmentConfig


def build_augmentation(config: AugmentConfig) -> v2.Compose:
    """Transforms for one (1, H, W) float tensor in [0, 1]."""
    steps: list[torch.nn.Module] = []
    if config.rotation_deg or config.zoom or config.translate:
        steps.append(
            v2.RandomAffine(
                degrees=config.rotation_deg,
                translate=(config.translate, config.translate) if config.translate else None,
                scale=(1.0 - config.zoom, 1.0 + config.zoom) if config.zoom else None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.brightness or config.contrast:
        steps.append(v2.ColorJitter(brightness=config.brightness, contrast=config.contrast))
    return v2.Compose(steps)
