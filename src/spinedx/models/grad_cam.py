"""Grad-CAM of one logit per sample over a network's evidence maps (Selvaraju et al. 2017).

Computed with autograd on maps the network returns as an output, rather than with pytorch-grad-cam or
MONAI: both hook submodules, which a traced program does not have, and both would load libraries that
analysis avoids.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def grad_cam(targets: torch.Tensor, maps: torch.Tensor, size: int) -> np.ndarray:
    """``(N, size, size)`` float32 heatmaps in [0, 1]: ``targets`` (N,) are the logits to explain, ``maps``
    (N, C, h, w) the activations they were computed from (in the same autograd graph)."""
    (gradients,) = torch.autograd.grad(targets.sum(), maps)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps.detach()).sum(1, keepdim=True))
    cams = F.interpolate(cams, size=(size, size), mode="bilinear", align_corners=False)
    peaks = cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return (cams / peaks)[:, 0].numpy().astype(np.float32)
