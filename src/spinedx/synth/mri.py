"""Procedural mid-sagittal lumbar spine MRI (T1 and T2) in the spider-sagittal layout.

Each patient is planned once: per-disc grades (Pfirrmann, narrowing, bulging, herniation,
Modic, endplates, spondylolisthesis) drawn with SPIDER-like prevalences per level, then a
spine built in millimetres from the sacrum upwards whose shape carries those grades. Each
series (t1, t2) of the patient renders that spine with its own tissue contrast, a small shift,
bias field, Rician noise and window, so a grade can only be learned from the pixels.

Geometry: all sizes are in millimetres. A `Frame` has a centre, an angle and a size; its
local axes are ``u`` (towards the patient's back, image +x: anterior is LEFT) and ``v``
(caudal, image +y: cranial is UP). ``spine[0]`` is S1 and ``spine[i]`` counts upwards
(L5, L4, ..., T7); disc ``k`` (the ``ivd_label``, 1 = L5/S1) lies between ``spine[k]`` above
and ``spine[k - 1]`` below. The sacrum below S1 is a chain of fused segments.

Output (see `generate_mri_dataset`): ``images/{patient}_{sequence}.png``, ``series.csv``,
``discs.csv``, ``gradings.csv``, ``spacing.csv`` and label masks ``masks/{image_id}.png``
(0 background, 1 vertebral body or sacrum, 2 disc, 3 spinal canal = thecal sac with CSF and
cord; posterior elements are not labelled) with ``masks/labels.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit, logit, ndtr

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path, atomic_write_text
from spinedx.io.levels import GRADE_COLUMNS, LEVEL_NAMES
from spinedx.io.masks import SEG_LABELS
from spinedx.io.spider import DISCS_WRITTEN, GRADINGS_WRITTEN
from spinedx.synth.geometry import Frame

SEQUENCES: tuple[str, ...] = ("t1", "t2")

# ivd_label k names LEVELS[k - 1]; disc k lies between vertebra k (above) and k - 1 (below).
LEVELS: tuple[str, ...] = tuple(LEVEL_NAMES[label] for label in range(1, 10))
SERIES_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient",
    "sequence",
    "width",
    "height",
    "n_boxes",
    "n_graded_discs",
    "boxes_match_gradings",
)
DISC_COLUMNS: tuple[str, ...] = DISCS_WRITTEN
GRADING_COLUMNS: tuple[str, ...] = GRADINGS_WRITTEN
SPACING_COLUMNS: tuple[str, ...] = ("image_id", "row_mm", "col_mm")
MASK_LABELS: dict[int, str] = SEG_LABELS  # one class table for synthetic masks, training and analysis

# --- grade model: prevalences measured on SPIDER gradings.csv (131 patients, 907 discs) ---------

# P(Pfirrmann = 1..5) per level. T9/T10 has only 7 real discs: pooled with T10/T11 and T11/T12.
PFIRRMANN_BY_LEVEL: dict[str, tuple[float, ...]] = {
    "L5/S1": (0.084, 0.153, 0.260, 0.267, 0.237),
    "L4/L5": (0.084, 0.122, 0.321, 0.267, 0.206),
    "L3/L4": (0.115, 0.191, 0.298, 0.237, 0.160),
    "L2/L3": (0.145, 0.275, 0.298, 0.153, 0.130),
    "L1/L2": (0.176, 0.344, 0.244, 0.168, 0.069),
    "T12/L1": (0.231, 0.392, 0.246, 0.108, 0.023),
    "T11/T12": (0.235, 0.353, 0.212, 0.176, 0.024),
    "T10/T11": (0.267, 0.267, 0.200, 0.233, 0.033),
    "T9/T10": (0.280, 0.300, 0.220, 0.170, 0.030),
}
# Share of discs with each finding per level ("modic" here: any Modic change).
_FINDINGS = (
    "herniation",
    "bulging",
    "narrowing",
    "modic",
    "up_endplate",
    "low_endplate",
    "spondylolisthesis",
)
PREVALENCE_BY_LEVEL: dict[str, dict[str, float]] = {
    level: dict(zip(_FINDINGS, shares, strict=True))
    for level, shares in {
        "L5/S1": (0.053, 0.725, 0.603, 0.412, 0.313, 0.351, 0.061),
        "L4/L5": (0.198, 0.725, 0.611, 0.519, 0.458, 0.504, 0.038),
        "L3/L4": (0.046, 0.695, 0.511, 0.443, 0.481, 0.473, 0.023),
        "L2/L3": (0.015, 0.611, 0.397, 0.374, 0.466, 0.458, 0.015),
        "L1/L2": (0.008, 0.389, 0.229, 0.305, 0.450, 0.427, 0.015),
        "T12/L1": (0.008, 0.146, 0.131, 0.200, 0.308, 0.308, 0.008),
        "T11/T12": (0.012, 0.165, 0.176, 0.176, 0.400, 0.388, 0.0),
        "T10/T11": (0.0, 0.033, 0.067, 0.100, 0.267, 0.233, 0.0),
        "T9/T10": (0.0, 0.100, 0.050, 0.150, 0.200, 0.250, 0.0),  # 7 real discs: smoothed
    }.items()
}
# How a finding depends on its parent grade (SPIDER, all levels): P(finding | parent value).
# Per level the odds are rescaled so that the level's prevalence above is kept.
_GIVEN_PFIRRMANN: dict[str, tuple[float, ...]] = {
    "narrowing": (0.086, 0.056, 0.363, 0.650, 1.0),
    "bulging": (0.137, 0.198, 0.584, 0.783, 0.883),
    "herniation": (0.007, 0.004, 0.045, 0.078, 0.153),
    "modic": (0.101, 0.125, 0.355, 0.456, 0.928),
    "spondylolisthesis": (0.0, 0.004, 0.008, 0.028, 0.117),
}
_UP_ENDPLATE_GIVEN_MODIC = (0.225, 0.743)  # P(up_endplate | no Modic, any Modic)
_LOW_ENDPLATE_GIVEN_UP = (0.063, 0.921)  # P(low_endplate | up_endplate 0, 1)
MODIC_TYPE_SHARES = (0.02, 0.95, 0.03)  # types 1, 2, 3 among Modic changes (SPIDER: 2, 308, 5)
# Graded discs per image (SPIDER 5: 1, 6: 44, 7: 56, 8: 23, 9: 7 of 131; more L1-L5-only views).
DISC_COUNT_SHARES: dict[int, float] = {5: 0.06, 6: 0.32, 7: 0.40, 8: 0.16, 9: 0.06}
_PATIENT_DEGENERATION_WEIGHT = 0.7  # correlation of a disc's latent degeneration with its patient's

# --- anatomy (millimetres), spine index 0 = S1 .. 11 = T7 -------------------------------------

_VERTEBRA_NAMES = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7")
_BODY_HEIGHT = (30.0, 28.5, 27.5, 27.0, 26.5, 25.5, 24.0, 23.0, 22.0, 21.0, 20.5, 20.0)
_BODY_DEPTH = (44.0, 42.0, 42.0, 41.0, 39.0, 37.0, 34.0, 32.0, 30.0, 29.0, 28.0, 27.0)
_SAC_DIAMETER = (10.0, 15.0, 15.5, 15.5, 15.0, 15.0, 14.0, 13.5, 13.0, 13.0, 13.0, 13.0)
# Disc k = 1..11 (index k - 1): healthy height at the centre and turn (degrees) between its bodies.
_DISC_HEIGHT = (10.5, 11.0, 10.5, 9.5, 8.5, 6.5, 6.0, 5.5, 5.0, 4.8, 4.5)
# Positive turns open the disc anteriorly. With the turns shrinking as discs narrow, the mean
# body angles (L5 19, L3 -3, L1 -12, T11 -20 degrees) follow the disc boxes of SPIDER.
_DISC_TURN = (13.0, 12.0, 11.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.0, -1.0, -1.0)
_SACRAL_SLOPE = 32.0  # angle of the S1 frame's caudal axis from the image vertical
_N_LUMBAR_DISCS = 5
_LORDOSIS_KEPT = 0.7  # share of the wedge lost by a narrowed disc that the disc above takes on
_SACRUM = (
    (26.0, 40.0),
    (22.0, 34.0),
    (18.0, 27.0),
    (15.0, 21.0),
    (12.0, 15.0),
    (10.0, 11.0),
)  # S2..Co2 (h, w)

# (T1, T2) signal of each tissue before the per-patient jitter, bias field and window.
_TISSUES: dict[str, tuple[float, float]] = {
    "fat": (0.92, 0.80),
    "muscle": (0.28, 0.19),
    "skin": (0.45, 0.35),
    "marrow": (0.64, 0.46),
    "bone": (0.04, 0.04),
    "ligament": (0.06, 0.05),
    "annulus": (0.26, 0.13),
    "csf": (0.10, 0.97),
    "cord": (0.42, 0.40),
    "roots": (0.30, 0.42),
    "vessel": (0.07, 0.07),
    "bowel_dark": (0.12, 0.15),
    "bowel_bright": (0.45, 0.85),
    "viscera": (0.38, 0.32),
    "hemangioma": (0.85, 0.78),
}
# Nucleus signal by Pfirrmann grade 1..5 and (T1, T2) of Modic types 1..3.
_NUCLEUS_T1 = (0.40, 0.38, 0.35, 0.30, 0.26)
_NUCLEUS_T2 = (0.95, 0.80, 0.50, 0.26, 0.14)
_MODIC_SIGNAL = {1: (0.30, 0.80), 2: (0.92, 0.70), 3: (0.10, 0.10)}

_BOX_MARGIN = (4.5, 3.0)  # mm added left/right and above/below the endplate corners
# The field of view is zoomed per patient so that the top graded disc and L5/S1 sit where
# SPIDER's do (disc centres at about 3-9% and 66-84% of the image height).
_TOP_DISC_AT, _LOWEST_DISC_AT = (0.03, 0.09), (0.66, 0.84)
_ZOOM = (0.8, 1.25)  # bounds on the per-patient spacing / pixel_spacing_mm
_MIN_FOV_ROWS_MM = 240.0
_MIN_FOV_COLS_MM = 140.0
_EDGE_MM = 1.0  # graded boxes stay this far inside the image after the per-series shift
_CUT_MM = 0.5  # the centre of the disc above the graded ones stays this far above the top edge
_SERIES_SHIFT_MM = 2.0


@dataclass
class Endplate:
    """Shape of one endplate: physiological concavity, roughness and notches (mm into the body)."""

    concave: float = 0.6
    rough: float = 0.0
    freq: float = 3.0
    phase: float = 0.0
    notches: tuple[tuple[float, float, float], ...] = ()  # (u as share of the width, width, depth)
    cortex: float = 0.9

    def indent(self, u, width: float):
        x = 2 * u / width
        bowl = np.clip(1 - x**2, 0, 1)
        depth = self.concave * bowl + self.rough * np.sin(math.pi * self.freq * x + self.phase) * bowl
        for centre, wide, deep in self.notches:
            depth = depth + deep * np.exp(-(((u - centre * width) / wide) ** 2))
        return depth

    @property
    def max_indent(self) -> float:
        return self.concave + abs(self.rough) + sum(deep for _, _, deep in self.notches)


@dataclass
class Band:
    """A Modic signal band under one endplate."""

    kind: int
    thickness: float
    centre: float  # share of the width
    cover: float  # share of the width


@dataclass
class Vertebra(Frame):
    name: str = ""
    top: Endplate = field(default_factory=Endplate)
    bottom: Endplate = field(default_factory=Endplate)
    wall: float = 1.0  # cortical wall (mm)
    waist: float = 1.0
    bands: list[tuple[int, Band]] = field(default_factory=list)  # (side -1 top / +1 bottom, band)
    focus: tuple[float, float, float] | None = None  # hemangioma (u, v, radius)
    process: tuple[float, float] = (28.0, 0.7)  # spinous process length (mm) and visibility


@dataclass
class Disc:
    label: int
    grades: dict[str, int]
    height: float
    bulge: float = 0.0  # posterior convexity beyond the bodies' walls (mm)
    bulge_front: float = 0.0
    hernia: dict[str, float] | None = None
    nucleus: dict[str, float] = field(default_factory=dict)


@dataclass
class Patient:
    pid: int
    spine: list[Vertebra]  # S1, L5, ..., T7 (already rotated and placed in the image, mm)
    sacrum: list[Vertebra]  # S2 .. Co2
    discs: list[Disc]  # label 1 .. 11
    n_graded: int
    spacing: float  # mm per pixel of this patient's images
    signals: dict[str, dict[str, float]]  # sequence -> tissue -> signal
    anatomy: dict
    texture_seed: int


@dataclass(frozen=True)
class Grid:
    """Pixel grid of one series: pixel (i, j) has its centre at ((j + 0.5) s + ox, (i + 0.5) s + oy) mm."""

    rows: int
    cols: int
    spacing: float
    ox: float = 0.0
    oy: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    def xs(self) -> np.ndarray:
        return ((np.arange(self.cols, dtype=np.float32) + 0.5) * self.spacing + self.ox)[None, :]

    def ys(self) -> np.ndarray:
        return ((np.arange(self.rows, dtype=np.float32) + 0.5) * self.spacing + self.oy)[:, None]

    def to_pixel(self, x, y):
        return (np.asarray(x) - self.ox) / self.spacing - 0.5, (np.asarray(y) - self.oy) / self.spacing - 0.5

    def rect(self, x0: float, x1: float, y0: float, y1: float):
        """Slices over an image rectangle (mm) and the mm coordinates of their pixel centres."""
        (j0, j1), (i0, i1) = self.to_pixel(np.array([x0, x1]), np.array([y0, y1]))
        j0, i0 = max(int(math.floor(j0)), 0), max(int(math.floor(i0)), 0)
        j1, i1 = min(int(math.ceil(j1)) + 1, self.cols), min(int(math.ceil(i1)) + 1, self.rows)
        if j0 >= j1 or i0 >= i1:
            return None
        s = self.spacing
        x = ((np.arange(j0, j1, dtype=np.float32) + 0.5) * s + self.ox)[None, :]
        y = ((np.arange(i0, i1, dtype=np.float32) + 0.5) * s + self.oy)[:, None]
        return (slice(i0, i1), slice(j0, j1)), x, y

    def window(self, frame: Frame, u0: float, u1: float, v0: float, v1: float):
        """Slices covering a local rectangle of ``frame`` and local (u, v) of their pixels."""
        xs, ys = frame.to_image(np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))
        found = self.rect(xs.min(), xs.max(), ys.min(), ys.max())
        if found is None:
            return None
        sl, x, y = found
        u, v = frame.to_local(x, y)
        return sl, u, v


@dataclass
class Canvas:
    """Signal, label mask and disc-label map of one series while it is drawn."""

    grid: Grid
    signal: np.ndarray
    mask: np.ndarray
    disc_id: np.ndarray

    def paint(self, sl, alpha, value, label: int | None = None) -> None:
        region = self.signal[sl]
        region += alpha * (value - region)
        if label is not None:
            self.mask[sl][alpha >= 0.5] = label


Box = tuple[float, float, float, float]


def generate_mri_dataset(
    out_dir: Path,
    n_patients: int = 40,
    seed: int = 42,
    *,
    image_size: tuple[int, int] = (384, 384),
    sequences: tuple[str, ...] = SEQUENCES,
    pixel_spacing_mm: float = 0.9,
) -> Path:
    """Write the spider-sagittal layout under out_dir; return out_dir.

    Files: ``images/{patient}_{sequence}.png`` (8-bit, cranial up, anterior left; patients
    1..n), ``series.csv``, ``discs.csv`` (one box per graded disc, around the disc and its
    endplates), ``gradings.csv`` (per patient and level, shared by its series) with the columns
    and conventions of SPIDER's files, ``spacing.csv`` (image_id, row_mm, col_mm) and
    ``masks/{image_id}.png`` with ``masks/labels.json`` (:data:`MASK_LABELS`).

    ``image_size`` is (height, width) in pixels. ``pixel_spacing_mm`` is the nominal size of a
    square pixel: each patient's field of view is zoomed by 0.8-1.25 so that its graded discs
    sit in the image as SPIDER's do (fewer discs, larger zoom); ``spacing.csv`` holds the
    spacing actually used, the same for all series of a patient. The nominal field of view
    (``image_size x pixel_spacing_mm``) must be at least 240 mm tall and 140 mm wide, e.g.
    192 px need 1.25 mm or more. Patient ``p`` depends only on ``seed`` and ``p``, and each
    series only on its patient and sequence, so adding patients or sequences leaves the other
    files unchanged.
    """
    n_patients, seed, rows, cols, sequences, spacing = _check_arguments(
        n_patients, seed, image_size, sequences, pixel_spacing_mm
    )
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    grade_model = _grade_model()
    series_rows, disc_rows, grading_rows, spacing_rows = [], [], [], []
    for pid in range(1, n_patients + 1):
        patient = _plan_patient(np.random.default_rng([seed, 1, pid]), pid, rows, cols, spacing, grade_model)
        graded = patient.discs[: patient.n_graded]
        for disc in graded:
            grading_rows.append((pid, disc.label, LEVELS[disc.label - 1], *_grade_values(disc)))
        for sequence in sequences:
            rng = np.random.default_rng([seed, 2, pid, SEQUENCES.index(sequence)])
            pixels, mask, boxes = _render_series(patient, sequence, rng, rows, cols)
            image_id = f"{pid}_{sequence}"
            _save_png(out_dir / "images" / f"{image_id}.png", pixels)
            _save_png(out_dir / "masks" / f"{image_id}.png", mask)
            n = len(graded)
            series_rows.append((image_id, pid, sequence, cols, rows, n, n, 1))
            for disc, box in zip(graded, boxes, strict=True):
                level = LEVELS[disc.label - 1]
                disc_rows.append((image_id, pid, sequence, disc.label, level, *box, *_grade_values(disc)))
            spacing_rows.append((image_id, f"{patient.spacing:.6g}", f"{patient.spacing:.6g}"))
    _save_csv(out_dir / "series.csv", SERIES_COLUMNS, series_rows)
    _save_csv(out_dir / "discs.csv", DISC_COLUMNS, disc_rows)
    _save_csv(out_dir / "gradings.csv", GRADING_COLUMNS, grading_rows)
    _save_csv(out_dir / "spacing.csv", SPACING_COLUMNS, spacing_rows)
    labels = {str(value): name for value, name in MASK_LABELS.items()}
    atomic_write_text(out_dir / "masks" / "labels.json", json.dumps(labels, indent=2) + "\n")
    return out_dir


def _check_arguments(n_patients, seed, image_size, sequences, pixel_spacing_mm):
    def integer(value) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not integer(n_patients) or n_patients < 1:
        raise InputError(f"n_patients must be an integer >= 1, got {n_patients!r}")
    if not integer(seed) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        not isinstance(image_size, tuple | list)
        or len(image_size) != 2
        or not all(integer(side) and 64 <= side <= 4096 for side in image_size)
    ):
        raise InputError(f"image_size must be (height, width) with integers in 64..4096, got {image_size!r}")
    if isinstance(sequences, str) or not isinstance(sequences, tuple | list) or not sequences:
        raise InputError(f"sequences must be a non-empty tuple drawn from {SEQUENCES}, got {sequences!r}")
    unknown = [name for name in sequences if name not in SEQUENCES]
    if unknown or len(set(sequences)) != len(sequences):
        raise InputError(f"sequences must be distinct names from {SEQUENCES}, got {sequences!r}")
    if (
        not isinstance(pixel_spacing_mm, numbers.Real)
        or isinstance(pixel_spacing_mm, bool)
        or not math.isfinite(pixel_spacing_mm)
        or not 0.1 <= pixel_spacing_mm <= 5.0
    ):
        raise InputError(f"pixel_spacing_mm must be a number in 0.1..5 (mm), got {pixel_spacing_mm!r}")
    rows, cols = int(image_size[0]), int(image_size[1])
    spacing = float(pixel_spacing_mm)
    if rows * spacing < _MIN_FOV_ROWS_MM or cols * spacing < _MIN_FOV_COLS_MM:
        need = max(_MIN_FOV_ROWS_MM / rows, _MIN_FOV_COLS_MM / cols)
        raise InputError(
            f"image_size {tuple(image_size)} x pixel_spacing_mm {spacing:g} gives a "
            f"{rows * spacing:.0f} x {cols * spacing:.0f} mm field of view; the sacrum to L1/L2 needs at "
            f"least {_MIN_FOV_ROWS_MM:.0f} x {_MIN_FOV_COLS_MM:.0f} mm: use pixel_spacing_mm >= {need:.3g} "
            "or a larger image_size"
        )
    order = tuple(name for name in SEQUENCES if name in sequences)
    return int(n_patients), int(seed), rows, cols, order, spacing


# --- grades -----------------------------------------------------------------------------------


def _odds_scaled(conditional, weights, prevalence: float) -> np.ndarray:
    """P(finding | parent) with the odds scaled so that sum(weights * p) == prevalence."""
    conditional = np.asarray(conditional, dtype=float)
    weights = np.asarray(weights, dtype=float) / np.sum(weights)
    if prevalence <= 0:
        return np.zeros_like(conditional)
    if prevalence >= 1:
        return np.ones_like(conditional)
    fixed = (conditional <= 0) | (conditional >= 1)
    base = logit(np.clip(conditional, 1e-6, 1 - 1e-6))

    def scaled(shift: float) -> np.ndarray:
        return np.where(fixed, conditional, expit(base + shift))

    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(weights * scaled(mid)) < prevalence else (lo, mid)
    return scaled((lo + hi) / 2)


def _grade_model() -> dict[str, dict]:
    """Per level: cumulative Pfirrmann shares and P(finding | parent) tables."""
    model = {}
    for level in LEVELS:
        pf = np.asarray(PFIRRMANN_BY_LEVEL[level], dtype=float)
        pf = pf / pf.sum()
        prev = PREVALENCE_BY_LEVEL[level]
        tables = {name: _odds_scaled(table, pf, prev[name]) for name, table in _GIVEN_PFIRRMANN.items()}
        modic = float(np.sum(pf * tables["modic"]))
        tables["up_endplate"] = _odds_scaled(
            _UP_ENDPLATE_GIVEN_MODIC, (1 - modic, modic), prev["up_endplate"]
        )
        up = prev["up_endplate"]
        tables["low_endplate"] = _odds_scaled(_LOW_ENDPLATE_GIVEN_UP, (1 - up, up), prev["low_endplate"])
        model[level] = {"cumulative": np.cumsum(pf), **tables}
    return model


def _draw_grades(rng, model, levels) -> list[dict[str, int]]:
    """Grades of one patient's discs at ``levels``; a patient-level latent makes degeneration
    cluster per patient."""
    weight = _PATIENT_DEGENERATION_WEIGHT
    patient = rng.standard_normal()
    modic_types = np.cumsum(MODIC_TYPE_SHARES) / sum(MODIC_TYPE_SHARES)
    grades = []
    for level in levels:
        table = model[level]
        latent = weight * patient + math.sqrt(1 - weight**2) * rng.standard_normal()
        pfirrmann = int(np.searchsorted(table["cumulative"][:-1], ndtr(latent), side="right")) + 1
        grade = {"pfirrmann": pfirrmann}
        for name in ("narrowing", "bulging", "herniation", "modic", "spondylolisthesis"):
            grade[name] = int(rng.random() < table[name][pfirrmann - 1])
        modic_type = int(np.searchsorted(modic_types, rng.random(), side="right")) + 1
        grade["up_endplate"] = int(rng.random() < table["up_endplate"][grade["modic"]])
        grade["low_endplate"] = int(rng.random() < table["low_endplate"][grade["up_endplate"]])
        grade["modic"] *= min(modic_type, 3)
        grades.append(grade)
    slipped = [k for k, grade in enumerate(grades) if grade["spondylolisthesis"]]
    for k in slipped[1:]:  # SPIDER never grades two slips in one patient
        grades[k]["spondylolisthesis"] = 0
    return grades


def _grade_values(disc: Disc) -> tuple[int, ...]:
    return tuple(int(disc.grades[name]) for name in GRADE_COLUMNS)


# --- planning ---------------------------------------------------------------------------------


def _plan_patient(rng, pid: int, rows: int, cols: int, spacing: float, model) -> Patient:
    """Grades, then the spine that shows them, placed in the field of view."""
    # Discs 10 and 11 (above T9/T10) are never graded; they look like an upper thoracic disc.
    grades = _draw_grades(rng, model, (*LEVELS, LEVELS[-1], LEVELS[-1]))
    for grade in grades[len(LEVELS) :]:
        grade["spondylolisthesis"] = 0
    size = rng.uniform(0.9, 1.1)
    discs = [_plan_disc(rng, k + 1, grade, size) for k, grade in enumerate(grades)]
    spine, sacrum = _build_spine(rng, discs, size)
    for k, disc in enumerate(discs, start=1):
        _plan_endplates(rng, spine[k], spine[k - 1], disc)
    wanted = int(rng.choice(list(DISC_COUNT_SHARES), p=_normalised(DISC_COUNT_SHARES.values())))
    n_graded, spacing = _place(rng, spine, sacrum, wanted, rows, cols, spacing)
    anatomy = {
        "back_depth": rng.uniform(75, 110) * size,
        "buttock": rng.uniform(10, 45),
        "fat": rng.uniform(8, 35),
        "prevertebral": rng.uniform(2, 6),
        "aorta": rng.uniform(7.5, 11) if rng.random() < 0.5 else 0.0,
        "sac": rng.uniform(0.85, 1.15),
        "epidural": rng.uniform(1.5, 4.5),
        "conus": rng.uniform(-0.3, 1.0),
        "cord": rng.uniform(3.6, 4.6),
        "coil": rng.uniform(120, 260),
        "pad_left": rng.uniform(0.03, 0.16) if rng.random() < 0.3 else 0.0,
        "back_knots": rng.normal(0, 6, 6),
        "fat_knots": rng.normal(0, 1, 5),
    }
    signals = {}
    for index, sequence in enumerate(SEQUENCES):
        signals[sequence] = {name: pair[index] * rng.uniform(0.92, 1.08) for name, pair in _TISSUES.items()}
    return Patient(pid, spine, sacrum, discs, n_graded, spacing, signals, anatomy, int(rng.integers(2**31)))


def _normalised(values) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array / array.sum()


def _plan_disc(rng, label: int, grade: dict[str, int], size: float) -> Disc:
    """Height, bulge, herniation and nucleus that make the grades visible."""
    pf = grade["pfirrmann"]
    if grade["narrowing"] or pf == 5:
        factor = rng.uniform(0.35, 0.55)
    else:
        factor = {3: rng.uniform(0.9, 1.0), 4: rng.uniform(0.82, 0.95)}.get(pf, rng.uniform(0.95, 1.05))
    disc = Disc(label, grade, _DISC_HEIGHT[label - 1] * size * factor)
    if grade["bulging"]:
        disc.bulge, disc.bulge_front = rng.uniform(2.0, 4.0), rng.uniform(0.5, 1.5)
    else:
        disc.bulge, disc.bulge_front = rng.uniform(-0.3, 0.6), rng.uniform(0.0, 0.8)
    if grade["herniation"]:  # protrusion (broad based) or extrusion (a fragment, maybe migrated)
        extruded = rng.random() < 0.3
        height = rng.uniform(7, 12) if extruded else rng.uniform(6, 10)
        disc.hernia = {
            "depth": max(disc.bulge, 0) + (rng.uniform(5, 9) if extruded else rng.uniform(4, 7)),
            "height": height,
            "shift": rng.choice((-1, 1)) * rng.uniform(2, 5) if extruded else rng.uniform(-1.0, 1.0),
            "neck": rng.uniform(0.3, 0.4) * height if extruded else 0.0,
            "signal": rng.uniform(0.45, 0.8),
        }
    disc.nucleus = {
        "size": (
            rng.uniform(0.55, 0.65),
            rng.uniform(0.5, 0.6),
            rng.uniform(0.4, 0.5),
            rng.uniform(0.3, 0.42),
            0.3,
        )[pf - 1],
        "t1": _NUCLEUS_T1[pf - 1] + rng.normal(0, 0.015),
        "t2": _NUCLEUS_T2[pf - 1] + rng.normal(0, 0.03),
        "mottle": (0.0, 0.04, 0.18, 0.15, 0.1)[pf - 1],
        "cleft": (0.0, rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.4), 0.0, 0.0)[pf - 1],
        "blur": (2.0, 2.0, 3.0, 3.0, 3.0)[pf - 1],
        "vacuum": float(pf == 5 and rng.random() < 0.3),
    }
    return disc


def _build_spine(rng, discs: list[Disc], size: float) -> tuple[list[Vertebra], list[Vertebra]]:
    """S1..T7 stacked upwards with lordosis and kyphosis, then the sacral chain downwards."""
    # Sagittal balance: a steeper sacrum comes with more lumbar lordosis above it.
    slope = rng.uniform(0.8, 1.2)
    lordosis, kyphosis = slope * rng.uniform(0.9, 1.1), rng.uniform(0.5, 1.6)
    turns = np.radians(np.array(_DISC_TURN) * np.where(np.arange(11) < _N_LUMBAR_DISCS, lordosis, kyphosis))
    turns += np.radians(rng.normal(0, 1.5, 11))
    theta = math.radians(_SACRAL_SLOPE * slope)
    spine, carry = [], 0.0
    for i, name in enumerate(_VERTEBRA_NAMES):
        h, w = (
            _BODY_HEIGHT[i] * size * rng.uniform(0.96, 1.04),
            _BODY_DEPTH[i] * size * rng.uniform(0.96, 1.04),
        )
        vert = Vertebra(
            0.0, 0.0, theta, w, h, name=name, wall=rng.uniform(0.6, 0.9), waist=rng.uniform(0.5, 1.5)
        )
        vert.process = (rng.uniform(24, 34) if i < 6 else rng.uniform(20, 28), rng.uniform(0.35, 0.75))
        if rng.random() < 0.05:
            vert.focus = (rng.uniform(-0.25, 0.25) * w, rng.uniform(-0.25, 0.25) * h, rng.uniform(2, 5))
        if spine:
            lower, disc = spine[-1], discs[i - 1]
            # A narrowed disc collapses as a whole: its wedge shrinks with its height and its
            # posterior height stays >= 1.5 mm; the discs above make up most of the lordosis
            # lost (the patient stays upright), up to T12/L1.
            wanted = turns[i - 1] + carry
            turn = wanted * (0.4 + 0.6 * min(disc.height / (_DISC_HEIGHT[i - 1] * size), 1.0))
            limit = math.asin(min(max((disc.height - 1.5) / ((w + lower.w) / 4), 0.0), 1.0))
            turn = min(turn, limit) if turn > 0 else turn
            carry = _LORDOSIS_KEPT * (wanted - turn) if i <= _N_LUMBAR_DISCS else 0.0
            vert.theta = lower.theta - turn
            _stack(vert, lower, disc.height, above=True)
        spine.append(vert)
        theta = vert.theta
    for i, disc in enumerate(discs, start=1):  # spondylolisthesis: the upper body slips forwards
        if disc.grades["spondylolisthesis"]:
            slip = rng.uniform(0.12, 0.25) * spine[i].w
            dx, dy = -math.cos(spine[i].theta) * slip, math.sin(spine[i].theta) * slip
            for vert in spine[i:]:
                vert.cx, vert.cy = vert.cx + dx, vert.cy + dy
    sacrum, lower = [], spine[0]
    for j, (h, w) in enumerate(_SACRUM):
        # The sacrum is concave in front: each segment turns its lower end forwards.
        seg = Vertebra(0.0, 0.0, lower.theta - math.radians(rng.uniform(3, 10)), w * size, h * size)
        seg.name, seg.wall = f"S{j + 2}" if j < 4 else f"Co{j - 3}", 1.0
        _stack(seg, lower, rng.uniform(0.8, 1.6) if j < 4 else rng.uniform(2, 3), above=False)
        sacrum.append(seg)
        lower = seg
    return spine, sacrum


def _stack(vert: Vertebra, other: Vertebra, gap: float, *, above: bool) -> None:
    """Place ``vert`` just above (or below) ``other`` with ``gap`` mm between the endplate
    centres, measured along the mean axis of the two bodies."""
    side = -1 if above else 1
    ex, ey = other.to_image(0.0, side * other.h / 2)
    phi = (vert.theta + other.theta) / 2
    half = vert.h / 2
    vert.cx = ex + side * (gap * math.sin(phi) + half * math.sin(vert.theta))
    vert.cy = ey + side * (gap * math.cos(phi) + half * math.cos(vert.theta))


def _plan_endplates(rng, upper: Vertebra, lower: Vertebra, disc: Disc) -> None:
    """Endplate irregularity and Modic bands of the two bodies around ``disc``."""
    grade = disc.grades
    for vert, flag, side in ((upper, grade["up_endplate"], 1), (lower, grade["low_endplate"], -1)):
        plate = Endplate(concave=rng.uniform(0.3, 0.9), cortex=rng.uniform(0.6, 0.9))
        if flag:
            plate.rough = rng.uniform(0.4, 1.0)
            plate.freq = rng.uniform(2.0, 5.0)
            plate.phase = rng.uniform(0, 2 * math.pi)
            count = int(rng.integers(1, 3))
            plate.notches = tuple(
                (rng.uniform(-0.3, 0.35), rng.uniform(2.0, 4.0), rng.uniform(1.5, 3.5)) for _ in range(count)
            )
            plate.cortex = rng.uniform(1.3, 2.2)  # sclerotic rim
        if side == 1:
            vert.bottom = plate
        else:
            vert.top = plate
    if grade["modic"]:
        sides = ((upper, 1), (lower, -1))
        if rng.random() < 0.3:
            sides = (sides[int(rng.integers(2))],)
        for vert, side in sides:
            band = Band(grade["modic"], rng.uniform(3.0, 9.0), rng.uniform(-0.2, 0.2), rng.uniform(0.5, 1.0))
            vert.bands.append((side, band))


def _disc_frame(upper: Vertebra, lower: Vertebra) -> Frame:
    ux, uy = upper.to_image(0.0, upper.h / 2)
    lx, ly = lower.to_image(0.0, -lower.h / 2)
    theta = (upper.theta + lower.theta) / 2
    return Frame((ux + lx) / 2, (uy + ly) / 2, theta, (upper.w + lower.w) / 2, math.hypot(lx - ux, ly - uy))


def _disc_corners(upper: Vertebra, lower: Vertebra, frame: Frame) -> dict[str, tuple[float, float]]:
    """Endplate corners around a disc in the disc frame: a/p = anterior/posterior, 1/2 = upper/lower."""
    points = {
        "a1": upper.to_image(-upper.w / 2, upper.h / 2),
        "p1": upper.to_image(upper.w / 2, upper.h / 2),
        "a2": lower.to_image(-lower.w / 2, -lower.h / 2),
        "p2": lower.to_image(lower.w / 2, -lower.h / 2),
    }
    return {name: frame.to_local(*xy) for name, xy in points.items()}


def _disc_box_mm(upper: Vertebra, lower: Vertebra) -> Box:
    """Image box (mm) around a disc and the adjacent endplates: the bounds of the four endplate
    corners plus a margin (sized so that box width and height per disc pitch match SPIDER's)."""
    xs, ys = zip(
        upper.to_image(-upper.w / 2, upper.h / 2),
        upper.to_image(upper.w / 2, upper.h / 2),
        lower.to_image(-lower.w / 2, -lower.h / 2),
        lower.to_image(lower.w / 2, -lower.h / 2),
        strict=True,
    )
    mx, my = _BOX_MARGIN
    return min(xs) - mx, min(ys) - my, max(xs) + mx, max(ys) + my


def _place(rng, spine, sacrum, wanted: int, rows: int, cols: int, spacing: float) -> tuple[int, float]:
    """Rotate the spine a few degrees, pick the patient's pixel spacing (field of view) and move
    the spine so that discs 1..n are boxed inside the image while disc n + 1 is at least half
    above its top edge; return n and the spacing."""
    angle = math.radians(float(np.clip(rng.normal(0, 2.0), -5, 5)))
    c, s = math.cos(angle), math.sin(angle)
    for vert in spine + sacrum:
        vert.cx, vert.cy = vert.cx * c + vert.cy * s, -vert.cx * s + vert.cy * c
        vert.theta += angle
    boxes = [_disc_box_mm(spine[k], spine[k - 1]) for k in range(1, len(spine))]
    centres = [_disc_frame(spine[k], spine[k - 1]).cy for k in range(1, len(spine))]
    top_at, lowest_at = rng.uniform(*_TOP_DISC_AT), rng.uniform(*_LOWEST_DISC_AT)
    margin = _EDGE_MM + _SERIES_SHIFT_MM
    for n in range(wanted, 0, -1):
        fov = (centres[0] - centres[n - 1]) / (lowest_at - top_at)
        spacing_n = round(spacing * float(np.clip(fov / (rows * spacing), *_ZOOM)), 5)
        rows_mm = rows * spacing_n
        shift_y = top_at * rows_mm - centres[n - 1]
        # Keep the top box inside, disc n + 1 above the image and the L5/S1 box inside.
        lo = margin - boxes[n - 1][1]
        hi = min(-_CUT_MM - _SERIES_SHIFT_MM - centres[n], rows_mm - margin - boxes[0][3])
        if lo <= hi or n == 1:
            shift_y = float(np.clip(shift_y, lo, max(lo, hi)))
            break
    cols_mm = cols * spacing_n
    left = min(box[0] for box in boxes[:n])
    right = max(box[2] for box in boxes[:n])
    shift_x = rng.uniform(0.42, 0.58) * cols_mm - (left + right) / 2
    shift_x = float(np.clip(shift_x, margin - left, max(margin - left, cols_mm - margin - right)))
    for vert in spine + sacrum:
        vert.cx += shift_x
        vert.cy += shift_y
    return n, spacing_n


# --- rendering --------------------------------------------------------------------------------


def _render_series(patient: Patient, sequence: str, rng, rows: int, cols: int):
    """8-bit image, label mask and integer disc boxes of one series."""
    spacing = patient.spacing
    shift = rng.uniform(-_SERIES_SHIFT_MM, _SERIES_SHIFT_MM, 2)
    grid = Grid(rows, cols, spacing, float(shift[0]), float(shift[1]))
    canvas = Canvas(
        grid,
        np.zeros(grid.shape, np.float32),
        np.zeros(grid.shape, np.uint8),
        np.zeros(grid.shape, np.uint8),
    )
    sig = patient.signals[sequence]
    tex = _Textures(patient.texture_seed, grid)
    bounds = _draw_soft_tissue(canvas, patient, sig, tex)
    for vert in patient.spine[1:]:
        _draw_posterior_elements(canvas, vert, patient, sig)
    _draw_canal(canvas, patient, sig, tex)
    for vert in patient.spine + patient.sacrum:
        _draw_body(canvas, vert, sig, sequence, tex)
    for k, disc in enumerate(patient.discs, start=1):
        _draw_disc(canvas, patient.spine[k], patient.spine[k - 1], disc, sig, sequence, tex)
    pixels = _acquire(canvas.signal, rng, grid, bounds, patient.anatomy["coil"])
    boxes = []
    for k in range(1, patient.n_graded + 1):
        boxes.append(
            _pixel_box(grid, _disc_box_mm(patient.spine[k], patient.spine[k - 1]), canvas.disc_id == k)
        )
    pad = int(patient.anatomy["pad_left"] * cols)
    if pad:
        pad = min(pad, min(box[0] for box in boxes) - int(math.ceil(8 / spacing)))
        if pad > 0:
            pixels[:, :pad] = 0
    return pixels, canvas.mask, boxes


_TEXTURES = ("muscle", "abdomen", "bowel", "gut", "marrow", "modic", "nucleus", "csf")


class _Textures:
    """Smooth noise fields of one patient, made on demand (the same pattern in each series)."""

    def __init__(self, seed: int, grid: Grid):
        self.seed = seed
        self.grid = grid
        self.cache: dict[str, np.ndarray] = {}

    def get(self, name: str, sigma_mm: tuple[float, float]) -> np.ndarray:
        """Unit-variance noise smoothed by ``sigma_mm`` (rows, columns)."""
        if name not in self.cache:
            rng = np.random.default_rng([self.seed, _TEXTURES.index(name)])
            noise = rng.standard_normal(self.grid.shape).astype(np.float32)
            sigma = tuple(max(s / self.grid.spacing, 0.5) for s in sigma_mm)
            noise = ndimage.gaussian_filter(noise, sigma, mode="reflect")
            self.cache[name] = noise / (noise.std() + 1e-6)
        return self.cache[name]


def _fill(distance, soft: float):
    """Anti-aliased coverage of a signed distance (negative inside); ``soft`` is one pixel."""
    return np.clip(0.5 - distance / soft, 0.0, 1.0).astype(np.float32)


def _row_profile(points: list[tuple[float, float]], ys: np.ndarray) -> np.ndarray:
    """x of a spine outline at each row, from (x, y) points."""
    pts = sorted(points, key=lambda p: p[1])
    return np.interp(ys[:, 0], [p[1] for p in pts], [p[0] for p in pts]).astype(np.float32)[:, None]


def _draw_soft_tissue(canvas: Canvas, patient: Patient, sig, tex: _Textures) -> np.ndarray:
    """Air, back fat, paraspinal muscle, abdomen and aorta; returns x (mm) of the back per row."""
    grid, a = canvas.grid, patient.anatomy
    x, y = grid.xs(), grid.ys()
    s = grid.spacing
    bodies = patient.spine + patient.sacrum
    front = _row_profile([v.to_image(-v.w / 2, dv) for v in bodies for dv in (-v.h / 2, v.h / 2)], y)
    wall = _row_profile([v.to_image(v.w / 2, dv) for v in patient.spine for dv in (-v.h / 2, v.h / 2)], y)
    s1 = patient.spine[0]
    below = np.clip((y - s1.cy) / 80.0, 0, 1)
    below = below * below * (3 - 2 * below)  # the buttocks round off below the sacrum
    knots = a["back_knots"]
    wobble = np.interp(y[:, 0], np.linspace(y.min(), y.max(), len(knots)), knots)[:, None]
    back = wall + a["back_depth"] + a["buttock"] * below + wobble
    back = ndimage.gaussian_filter1d(back[:, 0], 15.0 / s, mode="nearest")[:, None]  # skin is smooth
    knots = a["fat_knots"]
    fat = (
        a["fat"] * (1 + 0.15 * np.interp(y[:, 0], np.linspace(y.min(), y.max(), len(knots)), knots))[:, None]
    )
    full = (slice(None), slice(None))

    streak = tex.get("muscle", (10.0, 1.5))  # fatty streaks between muscle fibres running cranio-caudally
    muscle = sig["muscle"] + (sig["fat"] - sig["muscle"]) * np.clip(0.2 * streak - 0.1, 0, 0.45)
    canvas.paint(full, _fill(x - back, s), muscle)
    # Abdomen and pelvis: mesenteric fat and viscera with bowel loops of mixed content.
    lumps, loops, content = (
        tex.get("abdomen", (18.0, 18.0)),
        tex.get("bowel", (3.5, 3.5)),
        tex.get("gut", (6.0, 6.0)),
    )
    belly = sig["viscera"] + (sig["fat"] - sig["viscera"]) * np.clip(0.45 + 0.2 * lumps, 0, 1)
    inside = np.clip(0.5 + 0.4 * content, 0, 1)
    gut = sig["bowel_dark"] + (sig["bowel_bright"] - sig["bowel_dark"]) * inside
    bowel = _fill(0.8 - loops, 0.6) * np.clip(0.4 - 0.4 * lumps, 0, 1)
    belly = belly + bowel * (gut - belly)
    canvas.paint(full, _fill(x - (front - 1.0), s) * 0.85, sig["fat"])
    canvas.paint(full, _fill(x - (front - a["prevertebral"]), s), belly)
    canvas.paint(full, _fill(x - back, s) * _fill((back - fat) - x, s), sig["fat"])
    canvas.paint(full, _fill(x - back, s) * _fill((back - 1.5) - x, s), sig["skin"])
    if a["aorta"]:
        top = patient.spine[-1]
        points, radii = [], []
        for vert in patient.spine[2:][::-1]:  # T7 down to L4, where it divides
            bx, by = vert.back
            px, py = vert.to_image(-vert.w / 2, 0.0)
            gap = a["prevertebral"] + a["aorta"] + 1.0
            points.append((px - bx * gap, py - by * gap))
            radii.append(a["aorta"] if vert is not patient.spine[2] else 0.5 * a["aorta"])
        points.insert(0, (points[0][0], top.cy - 80.0))
        radii.insert(0, a["aorta"])
        found = _tube(grid, points, radii)
        if found is not None:
            sl, d = found
            canvas.paint(sl, _fill(d, s) * 0.85, sig["vessel"])
    return back


def _tube(grid: Grid, points, radii):
    """Signed distance (mm) to a chain of capsules with radii varying along it, over its window."""
    pts = np.asarray(points, dtype=np.float32)
    rad = np.asarray(radii, dtype=np.float32)
    pad = float(rad.max()) + 2 * grid.spacing
    found = grid.rect(
        pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad, pts[:, 1].max() + pad
    )
    if found is None:
        return None
    sl, x, y = found
    d = np.full((y.shape[0], x.shape[1]), np.inf, np.float32)
    for (x0, y0), (x1, y1), r0, r1 in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        reach = max(r0, r1) + 2 * grid.spacing
        cols = (x[0] >= min(x0, x1) - reach) & (x[0] <= max(x0, x1) + reach)
        rows = (y[:, 0] >= min(y0, y1) - reach) & (y[:, 0] <= max(y0, y1) + reach)
        if not cols.any() or not rows.any():
            continue
        ci, ri = np.flatnonzero(cols), np.flatnonzero(rows)
        sub = (slice(ri[0], ri[-1] + 1), slice(ci[0], ci[-1] + 1))
        xx, yy = x[:, sub[1]], y[sub[0], :]
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)) - (r0 + (r1 - r0) * t)
        np.minimum(d[sub], dist, out=d[sub])
    return sl, d


def _canal_line(patient: Patient, offset, radius) -> tuple[list, list]:
    """Points and radii of a tube along the canal: ``offset(vert, r)`` mm behind each body's
    posterior wall, ``radius(vert, r)`` wide, where r is the thecal sac radius there."""
    sac = patient.anatomy["sac"]
    points, radii = [], []
    for i in range(len(patient.spine) - 1, -1, -1):
        vert = patient.spine[i]
        r = _SAC_DIAMETER[i] * sac / 2
        bx, by = vert.back
        for dv in (-vert.h / 2, vert.h / 2):
            px, py = vert.to_image(vert.w / 2, dv)
            off = offset(vert, r)
            points.append((px + bx * off, py + by * off))
            radii.append(radius(vert, r))
    top = patient.spine[-1]
    ax, ay = math.sin(top.theta), math.cos(top.theta)
    points.insert(0, (points[0][0] - 60 * ax, points[0][1] - 60 * ay))
    radii.insert(0, radii[0])
    return points, radii


def _draw_canal(canvas: Canvas, patient: Patient, sig, tex: _Textures) -> None:
    """Ligamentum flavum, epidural fat, dura, CSF, cord and cauda equina."""
    grid, a, s = canvas.grid, patient.anatomy, canvas.grid.spacing
    gap = 0.8  # posterior longitudinal ligament and anterior epidural space

    def fat_of(vert: Vertebra) -> float:
        lumbar = vert.name.startswith("L") or vert.name == "S1"
        return a["epidural"] * (1.0 if lumbar else 0.4)

    sacral_points, sacral_radii = _sacral_canal(patient)
    for layer, extra in (("ligament", 1.8), ("fat", 0.0)):  # ligamentum flavum, then epidural fat
        points, radii = _canal_line(
            patient,
            lambda v, r, e=extra: gap + r + (fat_of(v) + e) / 2,
            lambda v, r, e=extra: r + (fat_of(v) + e) / 2,
        )
        found = _tube(grid, points + sacral_points, radii + [r + extra for r in sacral_radii])
        if found is not None:
            sl, d = found
            canvas.paint(sl, _fill(d, s), sig[layer])
    points, radii = _canal_line(patient, lambda v, r: gap + r, lambda v, r: r)
    # The thecal sac ends in a point at S2.
    s2 = patient.sacrum[0]
    tip = s2.to_image(s2.w / 2 + gap + 1.0, 0.0)
    sac_points, sac_radii = points + [tip], radii + [0.8]
    sac_radii[-2] = 0.6 * sac_radii[-2]
    found = _tube(grid, sac_points, [r + 0.4 for r in sac_radii])
    if found is not None:
        sl, d = found
        canvas.paint(sl, _fill(d, s), sig["ligament"])  # dura
    found = _tube(grid, sac_points, sac_radii)
    if found is None:
        return
    sl, d = found
    canvas.paint(sl, _fill(d, s), sig["csf"] * (1 + 0.03 * tex.get("csf", (3.0, 3.0))[sl]), label=3)
    # Cord: from the top down to the conus medullaris at L1 or L1/L2, tapering over 15 mm.
    l1 = patient.spine[5]
    conus = l1.to_image(l1.w / 2 + gap + _SAC_DIAMETER[5] * a["sac"] / 2, a["conus"] * l1.h / 2)
    cord_points = [p for p in sac_points if p[1] < conus[1] - 15] + [conus]
    cord_radii = [a["cord"]] * (len(cord_points) - 1) + [0.4]
    found = _tube(grid, cord_points, cord_radii)
    if found is not None:
        sl_c, d_c = found
        canvas.paint(sl_c, _fill(d_c, s), sig["cord"])
    # Cauda equina: thin roots hanging towards the back of the sac (the patient lies supine).
    for share in (0.35, 0.55, 0.75):
        below = zip(sac_points[:-1], sac_radii[:-1], strict=True)
        roots = [conus, *((px + share * r * 0.8, py) for (px, py), r in below if py > conus[1] + 3), tip]
        found = _tube(grid, roots, [0.6] * len(roots))
        if found is not None:
            sl_r, d_r = found
            canvas.paint(sl_r, _fill(d_r, max(s, 1.2)) * 0.35, sig["roots"])


def _sacral_canal(patient: Patient) -> tuple[list, list]:
    """The fat-filled sacral canal behind S2..S4."""
    points, radii = [], []
    for seg, r in zip(patient.sacrum[:3], (5.0, 4.0, 2.5), strict=True):
        bx, by = seg.back
        px, py = seg.to_image(seg.w / 2, 0.0)
        points.append((px + bx * (r + 1.5), py + by * (r + 1.5)))
        radii.append(r)
    return points, radii


def _draw_posterior_elements(canvas: Canvas, vert: Vertebra, patient: Patient, sig) -> None:
    """Spinous process behind the canal: fainter bone, as it is partly out of the slice."""
    i = _VERTEBRA_NAMES.index(vert.name)
    canal = _SAC_DIAMETER[i] * patient.anatomy["sac"] + 0.8 + 1.8 + patient.anatomy["epidural"]
    length, visible = vert.process
    # Lumbar processes point straight back; thoracic ones are longer and slope down.
    tilt, height = (math.radians(-8), 0.55 * vert.h) if i < 6 else (math.radians(-35), 0.35 * vert.h)
    base = vert.w / 2 + canal - 1.0
    cx, cy = vert.to_image(base + 0.5 * length * math.cos(tilt), 0.1 * vert.h - 0.5 * length * math.sin(tilt))
    process = Frame(cx, cy, vert.theta + tilt, length, height)
    reach = max(length, height) / 2 + 3
    window = canvas.grid.window(process, -reach, reach, -reach, reach)
    if window is None:
        return
    sl, u, v = window
    d = _rounded_box(u, v, length / 2, height / 2, 0.45 * height)
    s = canvas.grid.spacing
    bone = sig["marrow"] * 0.85 + 0.15 * sig["muscle"]
    canvas.paint(sl, _fill(d, 2 * s) * visible * 0.7, sig["bone"])
    canvas.paint(sl, _fill(d + 1.2, 2 * s) * visible, bone)


def _rounded_box(u, v, half_w: float, half_h: float, radius: float):
    qu, qv = np.abs(u) - half_w + radius, np.abs(v) - half_h + radius
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0) - radius


def _body_sdf(
    vert: Vertebra, u, v, inset_wall: float = 0.0, inset_top: float = 0.0, inset_bottom: float = 0.0
):
    """Signed distance (mm, approximate) to the body outline, optionally inset per side."""
    half_top = vert.h / 2 - vert.top.indent(u, vert.w) - inset_top
    half_bottom = vert.h / 2 - vert.bottom.indent(u, vert.w) - inset_bottom
    dv = np.where(v < 0, -v - half_top, v - half_bottom)
    waist = vert.waist * np.clip(1 - (2 * v / vert.h) ** 2, 0, 1)
    du = np.abs(u) - (vert.w / 2 - waist - inset_wall)
    r = 0.06 * min(vert.w, vert.h)
    qu, qv = du + r, dv + r
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0) - r


def _draw_body(canvas: Canvas, vert: Vertebra, sig, sequence: str, tex: _Textures) -> None:
    """Vertebral body: dark cortex and endplates around marrow, Modic bands, hemangioma."""
    s = canvas.grid.spacing
    window = canvas.grid.window(vert, -0.6 * vert.w, 0.6 * vert.w, -0.6 * vert.h - 4, 0.6 * vert.h + 4)
    if window is None:
        return
    sl, u, v = window
    outer = _fill(_body_sdf(vert, u, v), s)
    canvas.paint(sl, outer, sig["bone"], label=1)
    core = _fill(_body_sdf(vert, u, v, vert.wall, vert.top.cortex, vert.bottom.cortex), s)
    marrow = sig["marrow"] * (1 + 0.05 * tex.get("marrow", (2.5, 2.5))[sl])
    canvas.paint(sl, core, marrow)
    seq = SEQUENCES.index(sequence)
    for side, band in vert.bands:
        plate = vert.bottom if side == 1 else vert.top
        half = vert.h / 2 - plate.indent(u, vert.w)
        depth = np.where(side * v > 0, half - side * v, np.inf)
        wobble = 1 + 0.3 * tex.get("modic", (3.0, 3.0))[sl]
        within = _fill(depth - band.thickness * wobble, 2 * s)
        across = _fill(np.abs(u - band.centre * vert.w) - band.cover * vert.w / 2, 2 * s)
        canvas.paint(sl, core * within * across, _MODIC_SIGNAL[band.kind][seq])
    if vert.focus is not None:
        fu, fv, radius = vert.focus
        spot = _fill(np.hypot(u - fu, v - fv) - radius, s) * core
        canvas.paint(sl, spot, sig["hemangioma"])


def _draw_disc(canvas: Canvas, upper: Vertebra, lower: Vertebra, disc: Disc, sig, sequence: str, tex) -> None:
    """Annulus and nucleus between two bodies, bulge and herniation into the canal."""
    grid, s = canvas.grid, canvas.grid.spacing
    frame = _disc_frame(upper, lower)
    c = _disc_corners(upper, lower, frame)
    (ua1, va1), (up1, vp1), (ua2, va2), (up2, vp2) = c["a1"], c["p1"], c["a2"], c["p2"]
    hernia = disc.hernia
    reach_u = max(disc.bulge, 0) + (hernia["depth"] + 2 if hernia else 2)
    reach_v = (hernia["height"] + abs(hernia["shift"])) if hernia else 4
    window = grid.window(
        frame,
        min(ua1, ua2) - 4,
        max(up1, up2) + reach_u,
        min(va1, vp1) - reach_v - 4,
        max(va2, vp2) + reach_v + 4,
    )
    if window is None:
        return
    sl, u, v = window

    def across(v_, a_, b_):  # the line between two corners, as u at height v_
        return a_[0] + (b_[0] - a_[0]) * np.clip((v_ - a_[1]) / max(b_[1] - a_[1], 1e-3), 0, 1)

    def level(u_, a_, b_):  # the line between two corners, as v at position u_
        return a_[1] + (b_[1] - a_[1]) * (u_ - a_[0]) / (b_[0] - a_[0])

    front, back = across(v, c["a1"], c["a2"]), across(v, c["p1"], c["p2"])
    # Room for the disc to fill endplate concavities and notches; it tapers to 0.8 mm over the
    # last 3 mm before the walls, so that the disc does not creep up the bodies' waisted walls.
    walls = np.clip(np.minimum(u - (ua1 + ua2) / 2, (up1 + up2) / 2 - u) / 3.0, 0, 1)
    allow = 0.8 + max(upper.bottom.max_indent, lower.top.max_indent) * walls
    top, bottom = level(u, c["a1"], c["p1"]) - allow, level(u, c["a2"], c["p2"]) + allow
    d = np.maximum(np.maximum(front - u, u - back), np.maximum(top - v, v - bottom))
    mid_back, mid_front = (vp1 + vp2) / 2, (va1 + va2) / 2
    for amount, centre_u, centre_v, half in (
        (disc.bulge, (up1 + up2) / 2, mid_back, (vp2 - vp1) / 2),
        (disc.bulge_front, (ua1 + ua2) / 2, mid_front, (va2 - va1) / 2),
    ):
        if amount > 0.2:
            reach = max(half, 1.0) + 0.8 * amount  # the bulge overhangs the bodies' corners
            d = np.minimum(d, _ellipse_sdf(u - centre_u, v - centre_v, amount, reach))
    if hernia:
        v0 = mid_back + hernia["shift"]
        base = max(up1, up2)  # beyond both bodies' posterior walls, even with a slip
        depth, half_height = hernia["depth"], hernia["height"] / 2
        if hernia["neck"]:  # extrusion: a fragment joined to the disc by a narrower neck
            centre = base + 0.6 * depth
            d_h = _ellipse_sdf(u - centre, v - v0, 0.4 * depth, half_height)
            neck = _segment_distance(u, v, (base - 2, mid_back), (centre, v0)) - hernia["neck"]
            d_h = np.minimum(d_h, neck)
        else:  # protrusion: a broad-based dome on the posterior margin
            d_h = _ellipse_sdf(u - base, v - v0, depth, half_height)
        d = np.minimum(d, d_h)
    bodies = np.maximum(-_body_local_sdf(upper, frame, u, v), -_body_local_sdf(lower, frame, u, v))
    d = np.maximum(d, bodies)
    alpha = _fill(d, s)
    canvas.paint(sl, alpha, sig["annulus"], label=2)
    canvas.disc_id[sl][alpha >= 0.5] = disc.label
    nuc = disc.nucleus
    seq = SEQUENCES.index(sequence)
    if hernia:
        value = sig["annulus"] + hernia["signal"] * (nuc[sequence] - sig["annulus"])
        if seq == 1:
            value = max(value, sig["annulus"] + 0.4 * (0.7 - sig["annulus"]))
        canvas.paint(sl, _fill(np.maximum(d_h + 0.8, bodies), s) * alpha, value)
    # Nucleus: an ellipse a little behind the middle, inside the annulus.
    nu = (ua1 + ua2 + up1 + up2) / 4 + 0.06 * frame.w
    top_n, bottom_n = level(np.float32(nu), c["a1"], c["p1"]), level(np.float32(nu), c["a2"], c["p2"])
    nv = float(top_n + bottom_n) / 2
    height = max(float(bottom_n - top_n), 0.5)
    d_n = _ellipse_sdf(u - nu, v - nv, nuc["size"] * frame.w / 2, 0.38 * height)
    inner = np.maximum(d_n, d + 0.8)
    alpha_n = _fill(inner, s * nuc["blur"])
    mottle = 1 + nuc["mottle"] * tex.get("nucleus", (1.2, 1.2))[sl]
    canvas.paint(sl, alpha_n, nuc[sequence] * mottle)
    if nuc["cleft"]:
        canvas.paint(sl, alpha_n * _fill(np.abs(v - nv) - 0.5, s) * nuc["cleft"], sig["annulus"])
    if nuc["vacuum"]:
        canvas.paint(sl, _fill(_ellipse_sdf(u - nu, v - nv, 0.15 * frame.w, 0.2 * height), s) * alpha, 0.02)


def _body_local_sdf(vert: Vertebra, frame: Frame, u, v):
    x, y = frame.to_image(u, v)
    return _body_sdf(vert, *vert.to_local(x, y))


def _ellipse_sdf(du, dv, a: float, b: float):
    return (np.sqrt((du / a) ** 2 + (dv / b) ** 2) - 1) * min(a, b)


def _segment_distance(u, v, start, end):
    (u0, v0), (u1, v1) = start, end
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / max(du * du + dv * dv, 1e-9), 0, 1)
    return np.hypot(u - (u0 + t * du), v - (v0 + t * dv))


def _pixel_box(grid: Grid, box_mm: Box, pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Integer box (pixels, inside the image) around the geometric box and the disc's mask."""
    (x0, x1), (y0, y1) = grid.to_pixel(np.array([box_mm[0], box_mm[2]]), np.array([box_mm[1], box_mm[3]]))
    if pixels.any():
        rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
        x0, x1 = min(x0, cols[0]), max(x1, cols[-1])
        y0, y1 = min(y0, rows[0]), max(y1, rows[-1])
    xmin = int(np.clip(math.floor(x0), 0, grid.cols - 1))
    ymin = int(np.clip(math.floor(y0), 0, grid.rows - 1))
    xmax = int(np.clip(math.ceil(x1), xmin, grid.cols - 1))
    ymax = int(np.clip(math.ceil(y1), ymin, grid.rows - 1))
    return xmin, ymin, xmax, ymax


def _acquire(signal: np.ndarray, rng, grid: Grid, back: np.ndarray, coil: float) -> np.ndarray:
    """Signal to 8-bit image: blur, surface-coil bias field, Rician noise, random window."""
    s = grid.spacing
    image = ndimage.gaussian_filter(signal, rng.uniform(0.35, 0.7) * max(0.9 / s, 0.5))
    x, y = grid.xs(), grid.ys()
    rows_mm = grid.rows * s
    distance = np.maximum(float(np.median(back)) - x, 0)
    bias = 1 / np.sqrt(1 + (distance / coil) ** 2)
    bias = bias * (1 - rng.uniform(0.0, 0.25) * ((y - grid.oy - rows_mm / 2) / (rows_mm / 2)) ** 2)
    low = rng.standard_normal((4, 4))
    bias = bias * (
        1 + 0.08 * ndimage.zoom(low, (grid.rows / 4, grid.cols / 4), order=3)[: grid.rows, : grid.cols]
    )
    image = image * bias.astype(np.float32)
    sigma = rng.uniform(0.015, 0.04)
    noise = rng.standard_normal((2, *grid.shape)).astype(np.float32) * sigma
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    top = np.percentile(image, rng.uniform(99.0, 99.8)) * rng.uniform(0.85, 1.1)
    image = np.clip(image / max(top, 1e-6), 0, 1) ** rng.uniform(0.85, 1.2)
    return np.round(image * 255).astype(np.uint8)


# --- files ------------------------------------------------------------------------------------


def _save_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _save_csv(path: Path, columns, rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


__all__ = [
    "DISC_COLUMNS",
    "GRADE_COLUMNS",
    "GRADING_COLUMNS",
    "LEVELS",
    "MASK_LABELS",
    "SEQUENCES",
    "SERIES_COLUMNS",
    "SPACING_COLUMNS",
    "generate_mri_dataset",
]
