"""Segment a sagittal slice into background / vertebra / disc / spinal canal with the bundled U-Net.

The label map (:data:`spinedx.io.masks.SEG_LABELS`) has the shape of the slice's pixels, so it
lines up with the disc boxes of the findings and with the pixel spacing of the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spinedx.io.volumes import SagittalSlice
from spinedx.models.registry import resolve_weights
from spinedx.tasks.spine_seg.network import build_spine_segmenter, load_segmenter, segment_pixels

REGISTRY_NAME = "spine_segmenter"
WEIGHTS_NAME = "spine_segmenter.pt"
"""File name of the segmenter in run folders and in the package."""


@dataclass
class SpineSegmenter:
    model: torch.nn.Module
    input_size: int
    version: str = "unversioned"
    architecture: dict = field(default_factory=dict)
    """``channels`` and ``num_res_units`` of the U-Net, to rebuild the eager network."""

    @classmethod
    def load(cls, path: Path, version: str = "unversioned") -> SpineSegmenter:
        model, settings = load_segmenter(path)
        architecture = {key: settings[key] for key in ("channels", "num_res_units")}
        return cls(model, int(settings["input_size"]), version, architecture)

    def eager_network(self) -> torch.nn.Module:
        """The U-Net as an eager module (to export to ONNX or train on), whichever form was loaded."""
        if not isinstance(self.model, torch.jit.ScriptModule):
            return self.model
        network = build_spine_segmenter(self.architecture["channels"], self.architecture["num_res_units"])
        network.load_state_dict(self.model.state_dict())
        return network.eval()

    @classmethod
    def bundled(cls) -> SpineSegmenter:
        """The segmenter shipped inside the package (verified against its sha256)."""
        weights = resolve_weights(REGISTRY_NAME)
        return cls.load(weights.path, weights.version)

    def segment(self, image: SagittalSlice | np.ndarray) -> np.ndarray:
        """(H, W) uint8 label map of ``image`` (a slice or its (H, W) pixels)."""
        pixels = image.pixels if isinstance(image, SagittalSlice) else np.asarray(image)
        return segment_pixels(self.model, pixels, self.input_size)
