"""float16 storage of bundled weights and float32 for inference, on state dicts."""

from __future__ import annotations

import torch


def half_precision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors in float16 (bundled files at half the size), detached copies."""
    return {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).clone() for k, v in state_dict.items()
    }


def full_precision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors back in float32 for inference."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
