"""The 2-D MONAI U-Net shared by the disc localiser and the spine segmenter (one grey input channel)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def sagittal_unet(
    out_channels: int, channels: Sequence[int], num_res_units: int, dropout: float = 0.0
) -> nn.Module:
    """MONAI ``UNet`` with stride-2 levels: 1 input channel, ``out_channels`` logits."""
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=out_channels,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=int(num_res_units),
        dropout=float(dropout),
    )
