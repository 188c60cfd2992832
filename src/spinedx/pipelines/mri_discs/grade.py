"""Grade every disc of a sagittal MR slice: herniation, bulging, narrowing, Pfirrmann, Modic, ...

:class:`DiscGrader` wraps the multi-task network of :mod:`spinedx.models.disc_grader` with its
crop settings and the calibrators fitted on out-of-fold predictions
(:func:`spinedx.training.disc_grader.train_grader` writes the file). Probabilities it returns are
calibrated (Platt scaling per binary task, temperature scaling for Pfirrmann and Modic).

>>> grader = DiscGrader.load("src/spinedx/models/weights/disc_grader.pt")   # doctest: +SKIP
>>> grader.grade(pixels, [(190, 300, 270, 350)], [1])                     # doctest: +SKIP
[{"herniation": {"probability": 0.03}, ..., "pfirrmann": {"grade": 4, "probabilities": [...]}, ...}]

``pixels`` is the slice as read by :func:`spinedx.io.images.read_image` or
:func:`spinedx.io.volumes.read_sagittal` (2-D, cranial up, anterior left); boxes are
(xmin, ymin, xmax, ymax) around the disc and its adjacent endplates, in the same pixels, and
``ivd_labels`` count discs upwards from 1 = L5/S1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinedx.errors import InputError
from spinedx.models.disc_grader import (
    BINARY_TASKS,
    MODIC_GRADES,
    OUTPUT_ORDER,
    DiscGraderNet,
    disc_crops,
    pfirrmann_grade,
)
from spinedx.models.precision import full_precision
from spinedx.training.checkpoints import load_model_file
from spinedx.training.disc_grader import FORMAT, apply_calibration, predict_logits

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "disc_grader.pt"


class DiscGrader:
    """A trained disc grader: network, crop settings, calibrators and operating points."""

    def __init__(
        self,
        model: DiscGraderNet,
        *,
        crop: dict[str, Any],
        calibration: dict[str, Any],
        pfirrmann_decode: str = "expected",
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.crop_size = int(crop["size"])
        self.margin = float(crop["margin"])
        self.pad = float(crop["pad"])
        self.calibration = calibration
        self.pfirrmann_decode = pfirrmann_decode
        self.meta = dict(meta or {})

    @property
    def thresholds(self) -> dict[str, float]:
        """Operating point per binary task (Youden on out-of-fold calibrated probabilities)."""
        return dict(self.calibration.get("thresholds", {}))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_WEIGHTS) -> DiscGrader:
        """Read a grader written by :func:`spinedx.training.disc_grader.train_grader`."""
        path = Path(path)
        state = load_model_file(path, FORMAT, "a disc grader")
        try:
            settings = dict(state["model"])
            model = DiscGraderNet(
                settings["backbone"],
                pretrained="none",
                hidden=settings["hidden"],
                dropout=settings["dropout"],
            )
            model.load_state_dict(full_precision(state["state_dict"]))
            grader = cls(
                model,
                crop=state["crop"],
                calibration=state["calibration"],
                pfirrmann_decode=state.get("pfirrmann_decode", "expected"),
                meta=state.get("meta", {}),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged disc grader file ({exc.__class__.__name__}: {exc})") from exc
        return grader

    def probabilities(self, pixels: np.ndarray, boxes, ivd_labels) -> dict[str, np.ndarray]:
        """Calibrated probabilities: ``binary`` (N, 6), ``pfirrmann`` (N, 5), ``modic`` (N, 4)."""
        boxes = [tuple(float(v) for v in box) for box in boxes]
        labels = [int(label) for label in ivd_labels]
        if len(boxes) != len(labels):
            raise InputError(f"disc grading: {len(boxes)} boxes but {len(labels)} ivd_labels")
        for box in boxes:
            if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise InputError(
                    f"disc grading: box {box} is not (xmin, ymin, xmax, ymax) with positive size"
                )
        crops = disc_crops(pixels, boxes, self.crop_size, self.margin, self.pad)
        with torch.inference_mode():
            logits = predict_logits(self.model, crops, labels, self.crop_size)
        return apply_calibration(logits, self.calibration)

    def grade(self, pixels: np.ndarray, boxes: list[tuple], ivd_labels: list[int]) -> list[dict]:
        """One dict per box (same order) with calibrated probabilities and grades, keys in SPIDER's order."""
        probs = self.probabilities(pixels, boxes, ivd_labels)
        pfirrmann = pfirrmann_grade(probs["pfirrmann"], self.pfirrmann_decode)
        results = []
        for i in range(len(probs["binary"])):
            entry: dict[str, dict] = {}
            for name in OUTPUT_ORDER:
                if name == "pfirrmann":
                    entry[name] = {
                        "grade": int(pfirrmann[i]),
                        "probabilities": [float(p) for p in probs["pfirrmann"][i]],
                    }
                elif name == "modic":
                    entry[name] = {
                        "grade": int(np.argmax(probs["modic"][i]) + MODIC_GRADES[0]),
                        "probabilities": [float(p) for p in probs["modic"][i]],
                    }
                else:
                    entry[name] = {"probability": float(probs["binary"][i, BINARY_TASKS.index(name)])}
            results.append(entry)
        return results
