"""A trained canal stenosis classifier: load, compile to a traced program, and predict calibrated probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinedx.errors import InputError
from spinedx.models.calibration import PlattScaler
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.program import load_program, trace_program
from spinedx.models.registry import resolve_weights, sha256_of
from spinedx.tasks.canal_stenosis.network import StenosisNet, level_index, posterior_crops

FORMAT = "spinedx.canal_stenosis/1"
REGISTRY_NAME = "canal_stenosis"


class CanalStenosis:
    def __init__(self, model: torch.nn.Module, *, crop: dict[str, Any], calibration: dict[str, float],
                 architecture: dict[str, Any], threshold: float = 0.5, sha256: str | None = None) -> None:  # fmt: skip
        self.model = model.eval()
        self.crop_size = int(crop["size"])
        self.crop_scale = float(crop["scale"])
        self.calibration = PlattScaler(**calibration)
        self.architecture = dict(architecture)
        self.threshold = float(threshold)
        """Operating point on calibrated probabilities (Youden on out-of-fold predictions)."""
        self.sha256 = sha256
        """sha256 of the file it was loaded from: a grader's canal fusion names the model it was fitted with."""

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> CanalStenosis:
        """Read the file at ``path``; ``sha256`` spares hashing it again when the caller has checked it."""
        path = Path(path)
        state = read_model_file(path, FORMAT, "a canal stenosis classifier")
        try:
            if "program" in state:
                model = load_program(state["program"])
            else:
                model = StenosisNet(state["architecture"]["backbone"])
                model.load_state_dict(state["state_dict"])
            return cls(model, crop=state["crop"], calibration=state["calibration"],
                       architecture=state["architecture"], threshold=state.get("threshold", 0.5),
                       sha256=sha256 or sha256_of(path))  # fmt: skip
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"{path}: damaged canal stenosis file ({exc.__class__.__name__}: {exc})"
            ) from exc

    @classmethod
    def bundled(cls) -> CanalStenosis:
        weights = resolve_weights(REGISTRY_NAME)
        return cls.load(weights.path, weights.sha256)

    def compile(self, path: Path) -> Path:
        """Rewrite the file at ``path`` (which this model was loaded from) with a traced program."""
        state = read_model_file(path, FORMAT, "a canal stenosis classifier")
        example = (torch.rand(2, 1, self.crop_size, self.crop_size), torch.tensor([1, 2]))
        state["program"] = trace_program(self.model, example)
        state.pop("state_dict", None)
        return save_model_file(path, state)

    def logits(self, pixels: np.ndarray, boxes, ivd_labels) -> np.ndarray:
        crops = torch.from_numpy(posterior_crops(pixels, boxes, self.crop_size, self.crop_scale))
        levels = torch.from_numpy(level_index(ivd_labels))
        with torch.no_grad():
            return self.model(crops[:, None], levels).numpy().astype(np.float64)

    def probabilities(self, pixels: np.ndarray, boxes, ivd_labels) -> np.ndarray:
        """Calibrated P(central canal stenosis) per disc box."""
        if len(boxes) == 0:
            return np.zeros(0)
        return self.calibrated(self.logits(pixels, boxes, ivd_labels))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of :meth:`logits`' output."""
        return self.calibration.apply(logits)
