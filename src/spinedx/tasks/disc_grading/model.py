"""Grade every disc of a sagittal MR slice: herniation, bulging, narrowing, Pfirrmann, Modic, ...

:class:`DiscGrader` wraps the multi-task network of :mod:`spinedx.tasks.disc_grading.network` with its
crop settings and the calibrators fitted on out-of-fold predictions
(:func:`spinedx.tasks.disc_grading.train.train_grader` writes the file). Probabilities it returns are
calibrated (Platt scaling per binary task, temperature scaling for Pfirrmann and Modic).

A grader file may also carry a *canal fusion*: for some findings (herniation), a
:class:`~spinedx.models.calibration.LogitStack` over the grader's logit and the logit of the canal
stenosis model it was fitted with (recorded by sha256), fitted on out-of-fold predictions. Callers
that run that canal model pass its logits (``canal_logits``) and get the fused probabilities.

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
from PIL import Image
from scipy.special import expit

from spinedx.errors import InputError
from spinedx.models.calibration import LogitStack, PlattScaler, TemperatureScaler, softmax_probabilities
from spinedx.models.grad_cam import grad_cam
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.precision import full_precision
from spinedx.models.program import load_program, trace_program
from spinedx.tasks.disc_grading.network import (
    BINARY_TASKS,
    MODIC_GRADES,
    OUTPUT_ORDER,
    PFIRRMANN_WIDTH,
    DiscGraderNet,
    disc_crops,
    level_index,
    padded_margin,
    padded_size,
    pfirrmann_grade,
    pfirrmann_probabilities,
    pfirrmann_score,
    view_crops,
)

FORMAT = "spinedx.disc_grader/1"
"""Format tag of disc grader model files."""
REGISTRY_NAME = "disc_grader"
"""Name of the bundled grader in the weights manifest."""
NETWORK_SETTINGS: tuple[str, ...] = (
    "hidden",
    "dropout",
    "descriptors",
    "margin",
    "level_input",
    "pfirrmann_head",
)
"""``DiscGraderNet`` arguments a grader file's ``model`` section records (with ``backbone``); files from
before an argument existed rebuild with its default."""
EVIDENCE_PRIORITY: tuple[str, ...] = (
    "herniation",
    "bulging",
    "narrowing",
    "spondylolisthesis",
    "up_endplate",
    "low_endplate",
)
"""Which positive finding of a disc its heatmap explains, most important first; a disc without one
gets the heatmap of its Pfirrmann grade (every disc is graded)."""


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
        architecture: dict[str, Any] | None = None,
        canal_fusion: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.architecture = dict(architecture or {})
        """``DiscGraderNet`` settings (backbone, hidden, dropout, ...) that rebuild the eager network."""
        self.pfirrmann_head = self.architecture.get("pfirrmann_head", "coral")
        self.crop_size = int(crop["size"])
        self.margin = float(crop["margin"])
        self.pad = float(crop["pad"])
        self.calibration = calibration
        self.pfirrmann_decode = pfirrmann_decode
        self.meta = dict(meta or {})
        self.canal_fusion = dict(canal_fusion or {})
        """``{"canal_sha256": ..., "findings": {name: {"weights", "intercept", "threshold"}}}`` or empty."""

    @property
    def thresholds(self) -> dict[str, float]:
        """Operating point per binary task (Youden on out-of-fold calibrated probabilities)."""
        return dict(self.calibration.get("thresholds", {}))

    @property
    def canal_model_sha256(self) -> str | None:
        """sha256 of the canal stenosis model file whose logits this grader's canal fusion takes."""
        return self.canal_fusion.get("canal_sha256")

    def operating_points(self, fused: bool) -> dict[str, float]:
        """:attr:`thresholds`, with the fused findings' own operating points when ``fused``."""
        points = self.thresholds
        if fused:
            points.update({name: entry["threshold"] for name, entry in self.canal_fusion["findings"].items()})
        return points

    @classmethod
    def load(cls, path: str | Path) -> DiscGrader:
        """Read a grader written by :func:`spinedx.tasks.disc_grading.train.train_grader`."""
        path = Path(path)
        state = read_model_file(path, FORMAT, "a disc grader")
        try:
            if "program" in state:
                model = load_program(state["program"])
            else:
                model = grader_network(state["model"], full_precision(state["state_dict"]))
            grader = cls(
                model,
                crop=state["crop"],
                calibration=state["calibration"],
                pfirrmann_decode=state.get("pfirrmann_decode", "expected"),
                meta=state.get("meta", {}),
                architecture=state["model"],
                canal_fusion=state.get("canal_fusion"),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged disc grader file ({exc.__class__.__name__}: {exc})") from exc
        return grader

    def eager_network(self) -> DiscGraderNet:
        """The network as an eager module (to export to ONNX or train on), whichever form was loaded."""
        if isinstance(self.model, DiscGraderNet):
            return self.model
        return grader_network(self.architecture, self.model.state_dict())

    def compile(self, path: Path) -> Path:
        """Rewrite the grader file at ``path`` (which this grader was loaded from) with its network
        as a traced program in place of the state dict."""
        state = read_model_file(path, FORMAT, "a disc grader")
        example = (torch.rand(2, 1, self.crop_size, self.crop_size), torch.tensor([1, 2]))
        state["program"] = trace_program(self.model, example)
        state.pop("state_dict", None)
        return save_model_file(path, state)

    def probabilities(
        self, pixels: np.ndarray, boxes, ivd_labels, canal_logits=None
    ) -> dict[str, np.ndarray]:
        """Calibrated probabilities: ``binary`` (N, 6), ``pfirrmann`` (N, 5), ``modic`` (N, 4); fused
        with the canal model's ``canal_logits`` (one per box) when given."""
        boxes, labels = _checked(boxes, ivd_labels)
        crops = disc_crops(pixels, boxes, self.crop_size, self.margin, self.pad)
        # no_grad, not inference_mode: inference tensors cached by an eager network could not take part
        # in evidence()'s autograd afterwards.
        with torch.no_grad():
            logits = predict_logits(
                self.model, crops, labels, self.crop_size, pfirrmann_head=self.pfirrmann_head
            )
        return self._fused(logits, canal_logits)

    def _fused(self, logits: dict, canal_logits) -> dict[str, np.ndarray]:
        """Calibrated probabilities of raw ``logits``, the canal fusion's findings fused with ``canal_logits``."""
        probs = apply_calibration(logits, self.calibration, self.pfirrmann_head)
        if canal_logits is None:
            return probs
        if not self.canal_fusion:
            raise ValueError("canal logits given to a grader without a canal fusion")
        canal = np.asarray(canal_logits, dtype=np.float64).reshape(-1)
        binary = probs["binary"].copy()
        if len(canal) != len(binary):
            raise InputError(f"disc grading: {len(canal)} canal logits for {len(binary)} boxes")
        for name, entry in self.canal_fusion["findings"].items():
            column = BINARY_TASKS.index(name)
            stack = LogitStack(entry["weights"], entry["intercept"])
            binary[:, column] = stack.apply(np.column_stack([logits["binary"][:, column], canal]))
        return {**probs, "binary": binary}

    def evidence_finding(self, grades: dict[str, dict], fused: bool = False) -> str:
        """The finding of one disc's :meth:`grade` entry that its heatmap should explain (``fused``: its
        grades took the canal fusion, so the fused findings use their own operating points)."""
        thresholds = self.operating_points(fused)
        for name in EVIDENCE_PRIORITY:
            if name in grades and grades[name]["probability"] >= thresholds.get(name, 0.5):
                return name
        return "pfirrmann"

    def evidence(self, pixels: np.ndarray, boxes, ivd_labels, findings: list[str]) -> list[np.ndarray]:
        """Grad-CAM heatmap (:func:`~spinedx.models.grad_cam.grad_cam`) of each disc's ``findings[i]``
        logit, in ``pixels``' frame: float32 in [0, 1], zero outside the network's view of that disc."""
        boxes = [tuple(float(v) for v in box) for box in boxes]
        if not boxes:
            return []
        with torch.enable_grad():
            outputs = self._forward_for_evidence(pixels, boxes, ivd_labels)
            return self._heatmaps(outputs, findings, boxes, np.shape(pixels))

    def grade_and_explain(
        self, pixels: np.ndarray, boxes, ivd_labels, canal_logits=None
    ) -> tuple[list[dict], list[str], list[np.ndarray]]:
        """:meth:`grade`, each disc's :meth:`evidence_finding` and its :meth:`evidence` heatmap from one
        forward pass (analysis needs all three; a second pass would cost as much as the grading).
        A fused finding's heatmap explains the grader's part of it (the canal model has none)."""
        boxes, labels = _checked(boxes, ivd_labels)
        if not boxes:
            return [], [], []
        with torch.enable_grad():
            outputs = self._forward_for_evidence(pixels, boxes, labels)
            logits = {key: outputs[key].detach().numpy() for key in ("binary", "pfirrmann", "modic")}
            grades = self._grades(self._fused(logits, canal_logits))
            fused = canal_logits is not None
            explained = [self.evidence_finding(grade, fused) for grade in grades]
            return grades, explained, self._heatmaps(outputs, explained, boxes, np.shape(pixels))

    def _forward_for_evidence(self, pixels: np.ndarray, boxes, ivd_labels) -> dict[str, torch.Tensor]:
        """The network's outputs on every disc in one batch, with the graph kept (call under enable_grad)."""
        crops = torch.from_numpy(disc_crops(pixels, boxes, self.crop_size, self.margin, self.pad))
        views = view_crops(crops, self.crop_size).requires_grad_(True)
        return self.model(views, torch.from_numpy(level_index(ivd_labels)))

    def _heatmaps(
        self, outputs: dict[str, torch.Tensor], findings: list[str], boxes, shape
    ) -> list[np.ndarray]:
        targets = torch.stack(
            [_target_logit(outputs, row, name, self.pfirrmann_head) for row, name in enumerate(findings)]
        )
        cams = grad_cam(targets, outputs["evidence_maps"], self.crop_size)
        return [self.view_in_image(cam, box, shape) for cam, box in zip(cams, boxes, strict=True)]

    def view_in_image(self, cam: np.ndarray, box: tuple, shape: tuple[int, int]) -> np.ndarray:
        """``cam`` (the network's view of ``box``) resampled into an image of ``shape``, zero elsewhere.

        The view is the centre ``crop_size`` pixels of the padded crop, which
        :func:`spinedx.data.crops.crop_box` cuts as a square around the box centre.
        """
        height, width = shape
        big = padded_size(self.crop_size, self.pad)
        side = max(box[2] - box[0], box[3] - box[1], 1.0) * (
            1.0 + 2.0 * padded_margin(self.margin, big / self.crop_size)
        )
        left = round((box[0] + box[2]) / 2.0 - side / 2.0) + (big - self.crop_size) // 2 * side / big
        top = round((box[1] + box[3]) / 2.0 - side / 2.0) + (big - self.crop_size) // 2 * side / big
        view_side = max(int(round(self.crop_size * side / big)), 1)
        resized = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((view_side, view_side)))
        heatmap = np.zeros((height, width), dtype=np.float32)
        x0, y0 = int(round(left)), int(round(top))
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + view_side, width), min(y0 + view_side, height)
        if ix1 > ix0 and iy1 > iy0:
            heatmap[iy0:iy1, ix0:ix1] = resized[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        return np.clip(heatmap, 0.0, 1.0)

    def grade(
        self, pixels: np.ndarray, boxes: list[tuple], ivd_labels: list[int], canal_logits=None
    ) -> list[dict]:
        """One dict per box (same order) with calibrated probabilities and grades, keys in SPIDER's order
        (fused with ``canal_logits`` as in :meth:`probabilities`)."""
        return self._grades(self.probabilities(pixels, boxes, ivd_labels, canal_logits))

    def _grades(self, probs: dict[str, np.ndarray]) -> list[dict]:
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


def _checked(boxes, ivd_labels) -> tuple[list[tuple[float, ...]], list[int]]:
    """Boxes as float tuples and labels as ints; one clear error for a malformed box or a count mismatch."""
    boxes = [tuple(float(v) for v in box) for box in boxes]
    labels = [int(label) for label in ivd_labels]
    if len(boxes) != len(labels):
        raise InputError(f"disc grading: {len(boxes)} boxes but {len(labels)} ivd_labels")
    for box in boxes:
        if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
            raise InputError(f"disc grading: box {box} is not (xmin, ymin, xmax, ymax) with positive size")
    return boxes, labels


def _target_logit(
    outputs: dict[str, torch.Tensor], row: int, finding: str, pfirrmann_head: str
) -> torch.Tensor:
    """The logit of ``finding`` for crop ``row`` (Pfirrmann: a score rising with the grade)."""
    if finding == "pfirrmann":
        return pfirrmann_score(outputs["pfirrmann"][row : row + 1], pfirrmann_head)[0]
    return outputs["binary"][row, BINARY_TASKS.index(finding)]


@torch.no_grad()
def predict_logits(model: DiscGraderNet, crops: np.ndarray, levels, size: int, batch_size: int = 64,
                   *, pfirrmann_head: str = "coral") -> dict:  # fmt: skip
    """Raw logits of every head: ``binary`` (N, 6), ``pfirrmann`` (N, 4; softmax head: N, 5), ``modic`` (N, 4)."""
    model.eval()
    levels = torch.from_numpy(level_index(levels))
    crops_t = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
    parts: dict[str, list[np.ndarray]] = {"binary": [], "pfirrmann": [], "modic": []}
    for begin in range(0, len(crops_t), batch_size):
        images = view_crops(crops_t[begin : begin + batch_size], size)
        outputs = model(images, levels[begin : begin + batch_size])
        for key in parts:
            parts[key].append(outputs[key].numpy())
    return {
        key: np.concatenate(value) if value else np.zeros((0, width), dtype=np.float32)
        for (key, value), width in zip(
            parts.items(),
            (len(BINARY_TASKS), PFIRRMANN_WIDTH[pfirrmann_head], len(MODIC_GRADES)),
            strict=True,
        )
    }


def pfirrmann_probs_np(logits: np.ndarray, head: str = "coral") -> np.ndarray:
    return pfirrmann_probabilities(torch.as_tensor(np.asarray(logits, dtype=np.float64)), head).numpy()


def apply_calibration(
    logits: dict, calibration: dict | None, pfirrmann_head: str = "coral"
) -> dict[str, np.ndarray]:
    """Probabilities of raw logits: ``binary`` (N, 6), ``pfirrmann`` (N, 5), ``modic`` (N, 4).

    ``calibration`` None gives the uncalibrated probabilities (sigmoid / CORAL or softmax / softmax).
    """
    binary = np.asarray(logits["binary"], dtype=np.float64)

    def pfirrmann_probs(values: np.ndarray) -> np.ndarray:
        return pfirrmann_probs_np(values, pfirrmann_head)

    if calibration is None:
        return {
            "binary": expit(binary),
            "pfirrmann": pfirrmann_probs(logits["pfirrmann"]),
            "modic": softmax_probabilities(logits["modic"]),
        }
    columns = [
        PlattScaler(**calibration["binary"][task]).apply(binary[:, j]) for j, task in enumerate(BINARY_TASKS)
    ]
    return {
        "binary": np.stack(columns, 1) if columns else binary,
        "pfirrmann": TemperatureScaler(**calibration["pfirrmann"]).apply(
            logits["pfirrmann"], pfirrmann_probs
        ),
        "modic": TemperatureScaler(**calibration["modic"]).apply(logits["modic"]),
    }


def init_path(init: str) -> Path:
    """The grader file a recipe's ``grader.init`` names ('bundled' or a path)."""
    from spinedx.models.registry import resolve_weights

    path = resolve_weights(REGISTRY_NAME).path if init == "bundled" else Path(init)
    if not path.is_file():
        raise InputError(f"grader.init: '{init}' is neither 'none', 'bundled' nor an existing grader file")
    return path


def init_settings(init: str) -> dict[str, Any]:
    """The network and crop settings of the grader ``grader.init`` names, as recipe keys."""
    state = read_model_file(init_path(init), FORMAT, "a disc grader")
    network = {key: state["model"][key] for key in ("backbone", *NETWORK_SETTINGS) if key in state["model"]}
    return network | {"crop_size": int(state["crop"]["size"]), "pad": float(state["crop"]["pad"])}


def grader_network(architecture: dict[str, Any], weights: dict[str, torch.Tensor]) -> DiscGraderNet:
    """The eager network: ``architecture`` (a grader file's ``model`` settings) with float32 ``weights``."""
    settings = {key: architecture[key] for key in NETWORK_SETTINGS if key in architecture}
    network = DiscGraderNet(architecture["backbone"], pretrained="none", **settings)
    network.load_state_dict(weights)
    return network.eval()
