"""A trained canal stenosis classifier: load, compile to a traced program, predict calibrated probabilities,
and explain a logit with Grad-CAM (:meth:`CanalStenosis.evidence`; files compiled before the evidence
maps existed give none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from spinedx.errors import InputError
from spinedx.models.calibration import PlattScaler
from spinedx.models.grad_cam import grad_cam
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.program import load_program, trace_program
from spinedx.models.registry import resolve_weights, sha256_of
from spinedx.tasks.canal_stenosis.network import StenosisNet, WithEvidenceMaps, level_index, posterior_crops

FORMAT = "spinedx.canal_stenosis/1"
REGISTRY_NAME = "canal_stenosis"


class CanalStenosis:
    def __init__(self, model: torch.nn.Module, *, crop: dict[str, Any], calibration: dict[str, float],
                 architecture: dict[str, Any], threshold: float = 0.5, sha256: str | None = None,
                 evidence_program: bool = False) -> None:  # fmt: skip
        self.model = model.eval()
        self.crop_size = int(crop["size"])
        self.crop_scale = float(crop["scale"])
        self.calibration = PlattScaler(**calibration)
        self.architecture = dict(architecture)
        self.threshold = float(threshold)
        """Operating point on calibrated probabilities (Youden on out-of-fold predictions)."""
        self.has_evidence = isinstance(self.model, StenosisNet) or evidence_program
        """Whether :meth:`evidence` works: an eager network, or a program traced with its evidence maps."""
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
                       sha256=sha256 or sha256_of(path),
                       evidence_program=bool(state.get("program_with_evidence_maps", False)))  # fmt: skip
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
        network = WithEvidenceMaps(self.model) if isinstance(self.model, StenosisNet) else self.model
        state["program"] = trace_program(network, example)
        state["program_with_evidence_maps"] = self.has_evidence
        state.pop("state_dict", None)
        return save_model_file(path, state)

    def logits(self, pixels: np.ndarray, boxes, ivd_labels) -> np.ndarray:
        crops = torch.from_numpy(posterior_crops(pixels, boxes, self.crop_size, self.crop_scale))
        levels = torch.from_numpy(level_index(ivd_labels))
        with torch.no_grad():
            return self._forward(crops[:, None], levels)[0].numpy().astype(np.float64)

    def _forward(self, crops: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, when this model has them, the evidence maps."""
        if isinstance(self.model, StenosisNet):
            return self.model.forward_with_maps(crops, levels)
        out = self.model(crops, levels)
        return out if isinstance(out, tuple) else (out, None)

    def evidence(self, pixels: np.ndarray, boxes, ivd_labels) -> list[np.ndarray]:
        """Grad-CAM of each disc's logit in ``pixels``' frame (float32 in [0, 1], zero outside the crop of
        its posterior margin and canal); an InputError for a file without evidence maps."""
        if not self.has_evidence:
            raise InputError("canal stenosis: this model file was compiled without evidence maps")
        boxes = [tuple(float(v) for v in box) for box in boxes]
        if not boxes:
            return []
        crops = torch.from_numpy(posterior_crops(pixels, boxes, self.crop_size, self.crop_scale))
        with torch.enable_grad():
            logits, maps = self._forward(
                crops[:, None].requires_grad_(True), torch.from_numpy(level_index(ivd_labels))
            )
            cams = grad_cam(logits, maps, self.crop_size)
        return [self.in_image(cam, box, np.shape(pixels)) for cam, box in zip(cams, boxes, strict=True)]

    def in_image(self, cam: np.ndarray, box: tuple, shape: tuple[int, int]) -> np.ndarray:
        """``cam`` (the crop of ``box``'s posterior margin) resampled into an image of ``shape``.

        The crop is the square :func:`~spinedx.tasks.canal_stenosis.network.posterior_crops` cuts:
        ``crop_scale`` box widths wide, centred on the box's posterior edge at its mid-height.
        """
        height, width = shape
        side = self.crop_scale * (box[2] - box[0])
        left, top = int(round(box[2] - side / 2)), int(round((box[1] + box[3]) / 2 - side / 2))
        side_px = max(int(round(side)), 1)
        resized = np.asarray(Image.fromarray(cam).resize((side_px, side_px), Image.Resampling.BILINEAR))
        heatmap = np.zeros((height, width), dtype=np.float32)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side_px, width), min(top + side_px, height)
        if x1 > x0 and y1 > y0:
            heatmap[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left]
        return np.clip(heatmap, 0.0, 1.0)

    def probabilities(self, pixels: np.ndarray, boxes, ivd_labels) -> np.ndarray:
        """Calibrated P(central canal stenosis) per disc box."""
        if len(boxes) == 0:
            return np.zeros(0)
        return self.calibrated(self.logits(pixels, boxes, ivd_labels))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of :meth:`logits`' output."""
        return self.calibration.apply(logits)
