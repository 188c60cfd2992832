"""Find every intervertebral disc on a sagittal MR slice and name its level.

:class:`DiscLocalizer` runs the U-Net of :mod:`spinedx.tasks.disc_localization.network` on the letterboxed
slice, takes the connected components of the disc classes (softmax background < 0.5), and turns
each into a box in input pixels: the blob's extents, divided by the target shrink and scaled
by a calibration learnt on the training images, so boxes follow the reference convention (box
around the disc and the adjacent endplates).

Clean-up: blobs whose box mostly lies inside a stronger blob's box (one disc in pieces), blobs
off the spine's course (a smooth curve through the disc centres) and small discs cut by the top
edge of the image are left out, each with a warning.

Levels: discs are ordered along the spine by their centres (bottom-up, by image row). Among the
lowest three blobs, the one the network calls L5/S1 anchors ``ivd_label`` 1 (blobs below it are
sacral segments or artefacts) and the labels count upwards; a gap of about one missing disc
between neighbours skips a label (with a warning). When no low blob is called L5/S1 (field of
view cut above the sacrum) the lowest disc is taken as L5/S1 and a warning says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from spinedx.data.letterbox import Letterbox, letterbox
from spinedx.errors import InputError
from spinedx.io.levels import level_name
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.precision import full_precision, half_precision
from spinedx.models.program import load_program, trace_program
from spinedx.tasks.disc_localization.network import (
    INPUT_SIZE,
    L5S1,
    OTHER_DISC,
    TARGET_SHRINK,
    build_disc_localizer,
)

FORMAT = "spinedx.disc_localizer/1"
REGISTRY_NAME = "disc_localizer"
"""Name of the bundled localiser in the weights manifest."""
NO_L5S1_WARNING = "no sacrum/L5-S1 seen: levels assume the lowest disc is L5/S1"


@dataclass
class DiscDetection:
    box: tuple[float, float, float, float]
    """xmin, ymin, xmax, ymax in input pixels."""
    score: float
    ivd_label: int
    """1 = L5/S1, counting upwards."""
    level: str
    """"L5/S1", "L4/L5", ..., "T12/L1", ..."""


@dataclass
class Calibration:
    """Blob extents (divided by the target shrink) -> reference box: size factors and centre shifts."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_x: float = 0.0
    """Centre shift as a fraction of the box width."""
    shift_y: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass
class _Blob:
    cx: float
    cy: float
    w: float
    h: float
    """Centre and size in input pixels, before calibration (extents / shrink)."""
    score: float
    l5s1: float
    """Share of the blob's disc probability that is L5/S1."""
    l5s1_mass: float
    mass: float
    """Summed disc probability of the blob."""


@dataclass
class LocalizerSettings:
    input_size: int = INPUT_SIZE
    shrink: tuple[float, float] = TARGET_SHRINK
    threshold: float = 0.5
    smooth_sigma: float = 0.0
    """Gaussian smoothing (network pixels) of the disc probability before thresholding; 0 = none."""
    """Disc probability (L5/S1 + other) above which a pixel belongs to a blob."""
    min_area: int = 6
    """Smallest blob kept, in network pixels."""
    gap_factor: float = 1.6
    """A neighbour distance above this times the typical spacing counts as missing discs."""
    overlap: float = 0.5
    """A blob whose box overlaps a stronger blob's box by this share of its own area is a duplicate."""
    max_below: int = 2
    """At most this many blobs (sacral segments, artefacts) may lie below the L5/S1 blob."""
    weak_l5s1: float = 0.3
    """With no blob called L5/S1, the lowest ones with at least this L5/S1 share may anchor it."""
    cut_height: float = 0.6
    """A disc touching the top edge and less tall than this times the typical height is left out."""
    off_spine: float = 0.6
    """A blob farther than this times the typical disc width from the spine's course is dropped."""
    model: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`build_disc_localizer`."""


class DiscLocalizer:
    """A trained disc localiser (network, settings and box calibration)."""

    def __init__(
        self,
        model: torch.nn.Module,
        settings: LocalizerSettings | None = None,
        calibration: Calibration | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.settings = settings or LocalizerSettings()
        self.calibration = calibration or Calibration()
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: Path) -> DiscLocalizer:
        """Read a localiser written by :meth:`save` (or by the training code)."""
        path = Path(path)
        state = read_model_file(path, FORMAT, "a disc localiser")
        try:
            raw = dict(state["settings"])
            raw["shrink"] = tuple(raw.get("shrink", TARGET_SHRINK))
            settings = LocalizerSettings(**raw)
            calibration = Calibration(**state["calibration"])
            if "program" in state:
                model = load_program(state["program"])
            else:
                model = build_disc_localizer(**settings.model)
                model.load_state_dict(full_precision(state["state_dict"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"{path}: damaged disc localiser file ({exc.__class__.__name__}: {exc})"
            ) from exc
        return cls(model, settings, calibration, state.get("meta", {}))

    def save(self, path: Path, *, half: bool = True) -> Path:
        """Write the localiser atomically (weights in float16 when ``half``, to keep the file small)."""
        weights = self.model.state_dict()
        weights = half_precision(weights) if half else {k: v.detach().clone() for k, v in weights.items()}
        settings = dict(self.settings.__dict__)
        settings["shrink"] = list(settings["shrink"])
        save_model_file(
            Path(path),
            {
                "format": FORMAT,
                "state_dict": weights,
                "settings": settings,
                "calibration": self.calibration.as_dict(),
                "meta": self.meta,
            },
        )
        return Path(path)

    def eager_network(self) -> torch.nn.Module:
        """The U-Net as an eager module (to export to ONNX or train on), whichever form was loaded."""
        if not isinstance(self.model, torch.jit.ScriptModule):
            return self.model
        network = build_disc_localizer(**self.settings.model)
        network.load_state_dict(self.model.state_dict())
        return network.eval()

    def compile(self, path: Path) -> Path:
        """Rewrite the localiser file at ``path`` (which this localiser was loaded from) with its
        network as a traced program in place of the state dict."""
        state = read_model_file(path, FORMAT, "a disc localiser")
        size = self.settings.input_size
        state["program"] = trace_program(self.model, (torch.zeros(2, 1, size, size),))
        state.pop("state_dict", None)
        return save_model_file(path, state)

    # ------------------------------------------------------------------ inference

    def probabilities(self, pixels: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Softmax (3, S, S) on the network grid and the grid's geometry."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 2 or min(pixels.shape) < 2:
            raise InputError(f"disc localiser: expected a 2-D slice, got shape {pixels.shape}")
        tensor, geometry = letterbox(pixels, self.settings.input_size)
        with torch.inference_mode():
            probs = torch.softmax(self.model(tensor), dim=1)[0].numpy()
        return probs, geometry

    def _blobs(self, pixels: np.ndarray) -> list[_Blob]:
        probs, geometry = self.probabilities(pixels)
        disc = probs[L5S1] + probs[OTHER_DISC]
        # Light smoothing removes the checkerboard of the up-convolutions, which splits faint blobs.
        smooth = (
            ndimage.gaussian_filter(disc, self.settings.smooth_sigma) if self.settings.smooth_sigma else disc
        )
        labels, n = ndimage.label(smooth > self.settings.threshold)
        if n == 0:
            return []
        sx, sy = self.settings.shrink
        blobs = []
        for index, where in enumerate(ndimage.find_objects(labels), start=1):
            if where is None:
                continue
            inside = labels[where] == index
            area = int(inside.sum())
            if area < self.settings.min_area:
                continue
            rows, cols = where
            u0, u1 = cols.start, cols.stop
            v0, v1 = rows.start, rows.stop
            x0, y0 = geometry.to_input(u0, v0)
            x1, y1 = geometry.to_input(u1, v1)
            p_l5 = float(probs[L5S1][where][inside].sum())
            p_disc = float(disc[where][inside].sum())
            blobs.append(
                _Blob(
                    cx=0.5 * (x0 + x1),
                    cy=0.5 * (y0 + y1),
                    w=(x1 - x0) / sx,
                    h=(y1 - y0) / sy,
                    score=p_disc / area,
                    l5s1=p_l5 / max(p_disc, 1e-12),
                    l5s1_mass=p_l5,
                    mass=p_disc,
                )
            )
        return blobs

    def _box(self, blob: _Blob, height: int, width: int) -> tuple[float, float, float, float]:
        c = self.calibration
        w, h = blob.w * c.scale_x, blob.h * c.scale_y
        cx, cy = blob.cx + c.shift_x * w, blob.cy + c.shift_y * h
        return (
            float(np.clip(cx - w / 2, 0, width)),
            float(np.clip(cy - h / 2, 0, height)),
            float(np.clip(cx + w / 2, 0, width)),
            float(np.clip(cy + h / 2, 0, height)),
        )

    def detect(self, pixels: np.ndarray) -> tuple[list[DiscDetection], list[str]]:
        """Discs on ``pixels`` (2-D, cranial up, anterior left), bottom-up, and warnings."""
        pixels = np.asarray(pixels)
        blobs = self._blobs(pixels)
        warnings: list[str] = []
        if not blobs:
            return [], ["no intervertebral disc found"]
        height, width = pixels.shape
        blobs = self._clean(blobs, warnings)
        blobs.sort(key=lambda b: -b.cy)  # bottom (caudal) first
        anchor = self._anchor(blobs, warnings)
        if anchor > 0:
            warnings.append(f"{anchor} disc-like blob(s) below L5/S1 ignored (sacral segments or artefacts)")
        blobs = blobs[anchor:]
        labels = _assign_labels(blobs, self.settings.gap_factor, warnings)
        detections = [
            DiscDetection(
                box=self._box(blob, height, width),
                score=float(blob.score),
                ivd_label=label,
                level=level_name(label),
            )
            for blob, label in zip(blobs, labels, strict=True)
        ]
        return self._drop_cut_at_top(detections, warnings), warnings

    def _drop_cut_at_top(self, detections: list[DiscDetection], warnings: list[str]) -> list[DiscDetection]:
        """Leave out discs cut by the top edge of the image (too little of them to box or grade)."""
        if len(detections) < 3:
            return detections
        heights = np.array([d.box[3] - d.box[1] for d in detections])
        typical = float(np.median(heights))
        kept = [
            d
            for d, h in zip(detections, heights, strict=True)
            if not (d.box[1] <= 1.0 and h < self.settings.cut_height * typical)
        ]
        if len(kept) < len(detections):
            warnings.append(
                f"{len(detections) - len(kept)} disc(s) cut by the top edge of the image left out"
            )
        return kept

    def _anchor(self, blobs: list[_Blob], warnings: list[str]) -> int:
        """Index (bottom-up) of the L5/S1 blob among the lowest ones; 0 with a warning when none is."""
        candidates = range(min(len(blobs), self.settings.max_below + 1))
        called = [i for i in candidates if blobs[i].l5s1 > 0.5]
        if called:
            return max(called, key=lambda i: blobs[i].l5s1_mass)
        weak = [i for i in candidates if blobs[i].l5s1 > self.settings.weak_l5s1]
        if weak:
            anchor = max(weak, key=lambda i: blobs[i].l5s1)
            warnings.append(
                f"L5/S1 uncertain (probability {blobs[anchor].l5s1:.2f}): levels may be off by one"
            )
            return anchor
        warnings.append(NO_L5S1_WARNING)
        return 0

    def _clean(self, blobs: list[_Blob], warnings: list[str]) -> list[_Blob]:
        """Drop duplicate blobs (boxes overlapping a stronger blob) and blobs off the spine's course."""
        # Reference boxes of neighbouring discs never overlap: an overlap means one disc in pieces.
        kept: list[_Blob] = []
        for blob in sorted(blobs, key=lambda b: -b.mass):
            box = np.array(self._box(blob, np.inf, np.inf))
            area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
            if all(
                _intersection(box, np.array(self._box(k, np.inf, np.inf))) < self.settings.overlap * area
                for k in kept
            ):
                kept.append(blob)
        if len(kept) < len(blobs):
            warnings.append(f"{len(blobs) - len(kept)} blob(s) overlapping a stronger disc ignored")
        # Off the spine: x of the disc centres follows a smooth curve of y.
        dropped = 0
        while len(kept) >= 4 and dropped < len(kept) // 3 + 1:
            xs = np.array([b.cx for b in kept])
            ys = np.array([b.cy for b in kept])
            degree = 1 if len(kept) < 5 else 2 if len(kept) < 7 else 3
            scale = max(float(np.ptp(ys)), 1.0)
            fit = np.polyval(np.polyfit(ys / scale, xs, degree), ys / scale)
            residual = np.abs(xs - fit)
            typical = float(np.median([b.w * self.calibration.scale_x for b in kept]))
            worst = int(np.argmax(residual))
            if residual[worst] <= self.settings.off_spine * typical:
                break
            kept.pop(worst)
            dropped += 1
        if dropped:
            warnings.append(f"{dropped} blob(s) off the spine's course ignored")
        return kept

    # ------------------------------------------------------------------ calibration

    def calibrate(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> Calibration:
        """Fit the box calibration on images with reference boxes (training data only); set and return it.

        Each reference box is paired with the blob whose centre lies inside it (closest to
        its centre); size factors and centre shifts are medians over the pairs.
        """
        ratios_x, ratios_y, shifts_x, shifts_y = [], [], [], []
        for pixels, refs in zip(images, boxes, strict=True):
            blobs = self._blobs(np.asarray(pixels))
            for ref in np.asarray(refs, dtype=np.float64).reshape(-1, 4):
                rcx, rcy = 0.5 * (ref[0] + ref[2]), 0.5 * (ref[1] + ref[3])
                rw, rh = ref[2] - ref[0], ref[3] - ref[1]
                inside = [
                    b for b in blobs if ref[0] <= b.cx <= ref[2] and ref[1] <= b.cy <= ref[3] and b.w > 0
                ]
                if not inside:
                    continue
                blob = min(inside, key=lambda b: (b.cx - rcx) ** 2 + (b.cy - rcy) ** 2)
                ratios_x.append(rw / blob.w)
                ratios_y.append(rh / blob.h)
                shifts_x.append((rcx - blob.cx) / rw)
                shifts_y.append((rcy - blob.cy) / rh)
        if ratios_x:
            self.calibration = Calibration(
                scale_x=float(np.median(ratios_x)),
                scale_y=float(np.median(ratios_y)),
                shift_x=float(np.median(shifts_x)),
                shift_y=float(np.median(shifts_y)),
            )
        return self.calibration


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _assign_labels(blobs: list[_Blob], gap_factor: float, warnings: list[str]) -> list[int]:
    """ivd_labels for blobs ordered bottom-up, starting at 1 and skipping labels across gaps."""
    labels = [1]
    if len(blobs) < 2:
        return labels
    centres = np.array([(b.cx, b.cy) for b in blobs])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    for i, step in enumerate(steps):
        others = np.delete(steps, i)
        missing = 0
        if len(others) >= 2:
            typical = float(np.median(others))
            if typical > 0 and step > gap_factor * typical:
                missing = max(1, round(step / typical) - 1)
                warnings.append(
                    f"gap between discs {labels[-1]} and the next one: "
                    f"assumed {missing} disc(s) not found there"
                )
        labels.append(labels[-1] + 1 + missing)
    return labels
