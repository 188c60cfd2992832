"""Torch datasets over ROI crops."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class CropDataset(Dataset):
    """Items: ((3, H, W) float in [0, 1], label). Grayscale is replicated to 3 channels (ImageNet backbones)."""

    def __init__(
        self,
        crops: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if len(crops) != len(labels):
            raise ValueError(f"{len(crops)} crops but {len(labels)} labels")
        self.crops = crops
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.crops[index]).float().div_(255.0).unsqueeze(0)
        if self.transform is not None:
            image = self.transform(image)
        return image.expand(3, -1, -1).contiguous(), int(self.labels[index])


def crops_to_batch(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 3, H, W) float in [0, 1] for inference."""
    images = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0).unsqueeze(1)
    return images.expand(-1, 3, -1, -1).contiguous()
