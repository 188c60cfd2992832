"""First phase of MRI disc analysis: is the input a sagittal spine MR slice, the right way up?

:class:`InputCheck` scores the slice with :mod:`spinedx.models.input_check` and turns the class
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
from spinedx.models.input_check import INPUT_CLASSES, InputCheckHead, SliceFeatures
from spinedx.models.registry import resolve_weights
from spinedx.training.checkpoints import load_model_file
from spinedx.training.input_check import FORMAT

REGISTRY_NAME = "input_check"


@dataclass
class InputVerdict:
    probabilities: dict[str, float]
    warnings: list[str]
    refuse: bool
    """True when the slice should not be analysed."""


class InputCheck:
    def __init__(self, features: SliceFeatures, head: InputCheckHead, refuse_threshold: float) -> None:
        self.features = features.eval()
        self.head = head.eval()
        self.refuse_threshold = refuse_threshold

    @classmethod
    def load(cls, path: str | Path) -> InputCheck:
        path = Path(path)
        state = load_model_file(path, FORMAT, "an input-check")
        try:
            if tuple(state["classes"]) != INPUT_CLASSES:
                raise InputError(f"{path}: classes {state['classes']} differ from {list(INPUT_CLASSES)}")
            features = SliceFeatures(int(state["image_size"]))
            head = InputCheckHead(features.width)
            head.load_state_dict(state["head"])
            return cls(features, head, float(state["refuse_threshold"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged input-check file ({exc.__class__.__name__}: {exc})") from exc

    @classmethod
    def bundled(cls) -> InputCheck:
        return cls.load(resolve_weights(REGISTRY_NAME).path)

    def check(self, pixels: np.ndarray) -> InputVerdict:
        with torch.inference_mode():
            probabilities = torch.softmax(self.head(self.features([pixels])), 1)[0].tolist()
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
