"""First phase of MRI disc analysis: is the input a sagittal spine MR slice, the right way up?

:class:`InputCheck` scores the slice with :mod:`spinedx.tasks.input_check.network` and turns the class
probabilities into warnings for findings.json. A slice that is very probably not a spine MR image
(``P(other) >= refuse_threshold``) is not analysed further, so a radiograph, a photo or noise gets
a warning instead of invented discs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spinedx.errors import InputError
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.program import load_program, trace_program
from spinedx.models.registry import resolve_weights
from spinedx.tasks.input_check.network import (
    INPUT_CLASSES,
    InputCheckHead,
    InputCheckNet,
    SliceFeatures,
    resize_slices,
)

REGISTRY_NAME = "input_check"
FORMAT = "spinedx.input_check/1"
"""Format tag of input-check model files."""


@dataclass
class InputVerdict:
    probabilities: dict[str, float]
    warnings: list[str]
    refuse: bool
    """True when the slice should not be analysed."""


class InputCheck:
    """The gate network (``(N, 1, S, S)`` slices -> class logits) and the refusal threshold."""

    def __init__(self, network: torch.nn.Module, image_size: int, refuse_threshold: float) -> None:
        self.network = network.eval()
        self.image_size = image_size
        self.refuse_threshold = refuse_threshold

    @classmethod
    def load(cls, path: str | Path) -> InputCheck:
        """Read an input-check file: its traced ``program`` when it has one, else the fitted ``head``
        over the ImageNet features (which builds the backbone with timm)."""
        path = Path(path)
        state = read_model_file(path, FORMAT, "an input-check")
        try:
            if tuple(state["classes"]) != INPUT_CLASSES:
                raise InputError(f"{path}: classes {state['classes']} differ from {list(INPUT_CLASSES)}")
            image_size = int(state["image_size"])
            if "program" in state:
                network = load_program(state["program"])
            else:
                features = SliceFeatures(image_size)
                head = InputCheckHead(features.width)
                head.load_state_dict(state["head"])
                network = InputCheckNet(features, head)
            return cls(network, image_size, float(state["refuse_threshold"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged input-check file ({exc.__class__.__name__}: {exc})") from exc

    def compile(self, path: Path) -> Path:
        """Rewrite the model file at ``path`` (which this check was loaded from) with the traced program.

        The features stay float32: they are ImageNet weights, not a float16 bundle.
        """
        state = read_model_file(path, FORMAT, "an input-check")
        example = torch.rand(2, 1, self.image_size, self.image_size)
        state["program"] = trace_program(self.network, (example,), half=False)
        return save_model_file(path, state)

    @classmethod
    def bundled(cls) -> InputCheck:
        return cls.load(resolve_weights(REGISTRY_NAME).path)

    def check(self, pixels: np.ndarray) -> InputVerdict:
        with torch.inference_mode():
            probabilities = torch.softmax(self.network(resize_slices([pixels], self.image_size)), 1)[
                0
            ].tolist()
        named = dict(zip(INPUT_CLASSES, (round(p, 4) for p in probabilities), strict=True))
        likeliest = max(named, key=named.get)
        warnings = []
        refuse = named["other"] >= self.refuse_threshold
        if likeliest == "other":
            warnings.append(
                f"this does not look like a sagittal spine MR slice (P = {named['other']:.2f})"
                + (": not analysed" if refuse else ": findings may be meaningless")
            )
        elif likeliest == "reoriented_spine_mr":
            warnings.append(
                f"the slice looks rotated or mirrored (P = {named['reoriented_spine_mr']:.2f}): "
                "expected cranial up and anterior left; levels and grades may be wrong"
            )
        return InputVerdict(named, warnings, refuse)
