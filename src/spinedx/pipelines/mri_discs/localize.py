"""Find every intervertebral disc on a sagittal MR slice and name its level.

:class:`DiscLocalizer` runs the U-Net of :mod:`spinedx.models.disc_localizer` on the letterboxed
slice, takes the connected components of the disc classes (softmax background < 0.5), and turns
each into a box in input pixels: the blob's extents, divided by the target shrink and scaled
by a calibration learnt on the training images, so boxes follow the reference convention (box
around the disc and the adjacent endplates).

Levels: discs are ordered along the spine by their centres (bottom-up, by image row). The
blob the network calls L5/S1 anchors ``ivd_label`` 1 and the labels count upwards; a gap of
about one missing disc between neighbours skips a label (with a warning). When no blob is
called L5/S1 (field of view cut above the sacrum) the lowest disc is taken as L5/S1 and a
warning says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from spinedx.errors import InputError
from spinedx.io.spider import level_name
from spinedx.models.disc_localizer import (
    INPUT_SIZE,
    L5S1,
    OTHER_DISC,
    TARGET_SHRINK,
    Letterbox,
    build_disc_localizer,
    letterbox,
)
from spinedx.training.checkpoints import load_checkpoint, save_checkpoint

FORMAT = "spinedx.disc_localizer/1"
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


@dataclass
class LocalizerSettings:
    input_size: int = INPUT_SIZE
    shrink: tuple[float, float] = TARGET_SHRINK
    threshold: float = 0.5
    min_area: int = 6
    """Smallest blob kept, in network pixels."""
    gap_factor: float = 1.6
    """A neighbour distance above this times the typical spacing counts as missing discs."""
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
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{path}: not a disc localiser file (expected format '{FORMAT}')")
        try:
            raw = dict(state["settings"])
            raw["shrink"] = tuple(raw.get("shrink", TARGET_SHRINK))
            settings = LocalizerSettings(**raw)
            calibration = Calibration(**state["calibration"])
            model = build_disc_localizer(**settings.model)
            weights = {k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
            model.load_state_dict(weights)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"{path}: damaged disc localiser file ({exc.__class__.__name__}: {exc})"
            ) from exc
        return cls(model, settings, calibration, state.get("meta", {}))

    def save(self, path: Path, *, half: bool = True) -> Path:
        """Write the localiser atomically (weights in float16 when ``half``, to keep the file small)."""
        weights = {
            k: (v.detach().half() if half and v.is_floating_point() else v.detach()).clone()
            for k, v in self.model.state_dict().items()
        }
        settings = dict(self.settings.__dict__)
        settings["shrink"] = list(settings["shrink"])
        save_checkpoint(
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
        labels, n = ndimage.label(disc > self.settings.threshold)
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
        blobs.sort(key=lambda b: -b.cy)  # bottom (caudal) first
        called = [i for i, b in enumerate(blobs) if b.l5s1 > 0.5]
        if called:
            anchor = max(called, key=lambda i: blobs[i].l5s1_mass)
            if anchor > 0:
                warnings.append(
                    f"{anchor} disc-like blob(s) below L5/S1 ignored (sacral segments or artefacts)"
                )
            blobs = blobs[anchor:]
        else:
            warnings.append(NO_L5S1_WARNING)
        labels = _assign_labels(blobs, self.settings.gap_factor, warnings)
        height, width = pixels.shape
        return [
            DiscDetection(
                box=self._box(blob, height, width),
                score=float(blob.score),
                ivd_label=label,
                level=level_name(label),
            )
            for blob, label in zip(blobs, labels, strict=True)
        ], warnings

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
