"""Disc localiser network: a small 2-D U-Net segmenting intervertebral discs on a sagittal slice.

The slice is normalised per image (:func:`normalize_intensity`, percentiles so that T1, T2 and
T2-SPACE look alike), resized with its aspect ratio kept and zero-padded to a square of
``INPUT_SIZE`` pixels (:func:`letterbox`). The network predicts :data:`N_CLASSES` channels:
background, the L5/S1 disc and any other disc. Its targets are filled ellipses inscribed in each
reference box shrunk by :data:`TARGET_SHRINK` (so neighbouring discs never touch); the pipeline
(:mod:`spinedx.tasks.disc_localization.model`) turns the predicted blobs back into boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from spinedx.data.letterbox import Letterbox
from spinedx.models.unet import sagittal_unet

INPUT_SIZE = 256
"""Side of the square network input, pixels."""
N_CLASSES = 3
CLASS_NAMES = ("background", "L5/S1", "other disc")
BACKGROUND, L5S1, OTHER_DISC = 0, 1, 2
UNKNOWN_LEVEL_DISC = 3
"""Target value (not a network class) of a disc whose level is not known: L5/S1 or another disc."""
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
TARGET_SHRINK = (0.8, 0.6)
"""(width, height) fraction of a reference box covered by its target ellipse."""


def build_disc_localizer(
    channels: Sequence[int] = DEFAULT_CHANNELS, num_res_units: int = 1, dropout: float = 0.0
) -> nn.Module:
    """The U-Net (MONAI ``UNet``, stride-2 levels): 1 input channel, :data:`N_CLASSES` logits."""
    return sagittal_unet(N_CLASSES, channels, num_res_units, dropout)


def render_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    geometry: Letterbox,
    shrink: tuple[float, float] = TARGET_SHRINK,
    levels_known: bool = True,
) -> np.ndarray:
    """Class map (size, size) int64: ellipses inscribed in the shrunk ``boxes`` (input pixels).

    ``labels`` are ``ivd_label`` values; label 1 (L5/S1) paints :data:`L5S1`, any other
    :data:`OTHER_DISC`; without ``levels_known`` every disc paints :data:`UNKNOWN_LEVEL_DISC`.
    """
    size = geometry.size
    target = np.zeros((size, size), dtype=np.int64)
    centres = np.arange(size, dtype=np.float64) + 0.5
    for box, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, strict=True):
        x0, y0 = geometry.to_net(box[0], box[1])
        x1, y1 = geometry.to_net(box[2], box[3])
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        a = max(0.5 * (x1 - x0) * shrink[0], 0.75)
        b = max(0.5 * (y1 - y0) * shrink[1], 0.75)
        inside = ((centres[None, :] - cx) / a) ** 2 + ((centres[:, None] - cy) / b) ** 2 <= 1.0
        target[inside] = UNKNOWN_LEVEL_DISC if not levels_known else L5S1 if int(label) == 1 else OTHER_DISC
    return target
