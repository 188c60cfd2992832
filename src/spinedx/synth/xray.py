"""Procedural lateral lumbar-spine radiographs with VinDr-SpineXR style annotations.

A radiograph is drawn as X-ray attenuation layers (soft tissue, cortical and cancellous bone,
metal) that `_expose` turns into film brightness with a random exposure, window, gamma, blur
and noise. Every lesion is drawn into the pixels inside its box, so a model can only learn
it from the image; simulated readers then box what they see, with jitter, misses and the
occasional wrong label.

Geometry: a `Frame` has a centre, an angle and a size; its local axes are ``u`` (towards the
patient's back, +x before an optional mirror) and ``v`` (caudal, +y). The spine is a list of
`Vertebra` frames: index 0 is T12 (cut by the top edge), 1..5 are L1..L5 and 6 is S1; disc
``d`` lies between vertebrae ``d`` and ``d + 1``. Anatomy and lesions are planned once per
patient (one study); each exposure of the study sees them through a slightly different view.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit

from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS, NO_FINDING
from spinedx.synth.geometry import Frame

LESION_TYPES: tuple[str, ...] = (
    "Osteophytes",
    "Disc space narrowing",
    "Foraminal stenosis",
    "Spondylolysthesis",
    "Surgical implant",
    "Vertebral collapse",
    "Other lesions",
)

# Share of each type among the drawn lesions; normal images are set by ``normal_fraction``.
DEFAULT_CLASS_FREQUENCIES: dict[str, float] = {
    "Osteophytes": 0.55,
    "Disc space narrowing": 0.15,
    "Foraminal stenosis": 0.10,
    "Spondylolysthesis": 0.07,
    "Vertebral collapse": 0.06,
    "Surgical implant": 0.04,
    "Other lesions": 0.03,
}

# Labels a reader may give instead of the drawn one (look-alikes at the same place).
_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "Osteophytes": ("Disc space narrowing", "Foraminal stenosis"),
    "Disc space narrowing": ("Osteophytes", "Spondylolysthesis"),
    "Foraminal stenosis": ("Osteophytes", "Disc space narrowing"),
    "Spondylolysthesis": ("Disc space narrowing",),
    "Surgical implant": ("Other lesions",),
    "Vertebral collapse": ("Other lesions", "Disc space narrowing"),
    "Other lesions": ("Vertebral collapse", "Osteophytes"),
}

# Where each lesion type may sit: vertebra or disc index -> relative weight (lower levels
# degenerate more often; collapse favours the thoracolumbar junction).
_SITE_WEIGHTS: dict[str, dict[int, float]] = {
    "Osteophytes": {1: 1.0, 2: 1.2, 3: 1.5, 4: 1.7, 5: 1.5},
    "Disc space narrowing": {1: 0.6, 2: 0.8, 3: 1.0, 4: 1.6, 5: 1.4},
    "Foraminal stenosis": {1: 0.5, 2: 0.8, 3: 1.0, 4: 1.5, 5: 1.3},
    "Spondylolysthesis": {3: 0.6, 4: 1.6, 5: 1.0},
    "Surgical implant": {3: 0.6, 4: 1.4, 5: 1.0},  # vertebrae (i, i + 1) are instrumented
    "Vertebral collapse": {1: 1.6, 2: 1.2, 3: 0.8, 4: 0.6},
    "Other lesions": {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0},
}
# Osteophyte corners: anterior-superior, anterior-inferior, posterior-superior, posterior-inferior.
_CORNER_WEIGHTS = (0.35, 0.45, 0.08, 0.12)
_ONE_PER_IMAGE = ("Spondylolysthesis", "Surgical implant")

_LESION_COUNTS, _LESION_COUNT_P = (1, 2, 3), (0.55, 0.3, 0.15)
_READER_COUNTS, _READER_COUNT_P = (1, 2, 3), (0.5, 0.3, 0.2)
_SECOND_EXPOSURE_RATE = 0.25
_MISS_RATE = 0.03  # plus up to 0.1 for the subtlest lesions
_RELABEL_RATE = 0.05
_MIRROR_RATE = 0.3

# Posterior elements as capsules: (u0, v0, u1, v1, radius, attenuation); u in body widths
# behind the posterior wall, v and radius in body heights.
_POSTERIOR_PARTS = (
    (-0.05, -0.22, 0.30, -0.24, 0.16, 0.26),  # pedicle
    (0.28, -0.20, 0.33, -0.66, 0.11, 0.26),  # superior articular process
    (0.42, -0.02, 0.50, 0.58, 0.11, 0.26),  # inferior articular process, behind the next one's superior
)
# Lamina and spinous process: a faint plate, (u, v) corners as above.
_SPINOUS_PROCESS = ((0.36, -0.28), (0.95, -0.12), (1.0, 0.22), (0.42, 0.36))


@dataclass
class Vertebra(Frame):
    """A vertebral body frame plus its bone properties and deformities."""

    cortex: float = 0.45
    density: float = 0.3
    waist: float = 0.03
    ant_loss: float = 0.0  # anterior height lost to a wedge collapse
    mid_loss: float = 0.0  # central height lost to a biconcave collapse


@dataclass
class Lesion:
    kind: str
    site: tuple[int, int]  # (vertebra or disc index, osteophyte corner)
    params: dict[str, float]


@dataclass
class Patient:
    spine: list[Vertebra]
    lesions: list[Lesion]


@dataclass
class Film:
    """Attenuation layers of one radiograph."""

    background: np.ndarray
    dense: np.ndarray
    spongy: np.ndarray
    posterior: np.ndarray  # posterior elements, merged by maximum so overlaps read as one bone
    metal: np.ndarray

    @classmethod
    def blank(cls, size: int) -> Film:
        return cls(*(np.zeros((size, size), np.float32) for _ in range(5)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.dense.shape


Box = tuple[float, float, float, float]


def generate_xray_dataset(
    out_dir: Path,
    n_images: int = 300,
    seed: int = 42,
    *,
    image_size: int = 512,
    class_frequencies: dict[str, float] | None = None,
    normal_fraction: float = 0.15,
    n_readers: int = 3,
) -> Path:
    """Write out_dir/images/<image_id>.png (8-bit grayscale) and out_dir/annotations.csv; return the CSV path."""
    frequencies = _check_arguments(n_images, seed, image_size, class_frequencies, normal_fraction, n_readers)
    n_images, seed, image_size, n_readers = int(n_images), int(seed), int(image_size), int(n_readers)
    allowed = {kind for kind, share in frequencies.items() if share > 0}
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    readers = [f"R{i + 1}" for i in range(n_readers)]
    reader_rng = np.random.default_rng([seed, 0])
    box_scale = {rad_id: reader_rng.uniform(0.92, 1.12) for rad_id in readers}  # tight vs loose boxers

    rows: list[tuple] = []
    first = 0
    while first < n_images:
        # Seeding by image index keeps earlier images unchanged when n_images grows.
        patient_rng = np.random.default_rng([seed, 1, first])
        exposures = 2 if patient_rng.random() < _SECOND_EXPOSURE_RATE else 1
        patient = _plan_patient(patient_rng, image_size, frequencies, normal_fraction)
        for index in range(first, min(first + exposures, n_images)):
            view_rng = np.random.default_rng([seed, 2, index])
            pixels, truths = _render_image(patient, view_rng, image_size)
            image_id = f"synx_{index:05d}"
            _write_atomic(images_dir / f"{image_id}.png", lambda tmp, p=pixels: _save_png(p, tmp))
            ids = (image_id, f"synx_st{first:05d}", f"synx_se{index:05d}")
            rows += _read_image(view_rng, truths, readers, box_scale, allowed, image_size, ids)
        first += exposures

    csv_path = out_dir / "annotations.csv"
    _write_atomic(csv_path, lambda tmp: _save_csv(rows, tmp))
    return csv_path


def _check_arguments(n_images, seed, image_size, class_frequencies, normal_fraction, n_readers):
    """Validate the arguments; return the lesion type frequencies to draw from."""
    if not isinstance(n_images, numbers.Integral) or n_images < 1:
        raise InputError(f"n_images must be an integer >= 1, got {n_images!r}")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(image_size, numbers.Integral) or image_size < 64:
        raise InputError(f"image_size must be an integer >= 64, got {image_size!r}")
    if not isinstance(normal_fraction, numbers.Real) or not 0.0 <= normal_fraction <= 1.0:
        raise InputError(f"normal_fraction must be between 0 and 1, got {normal_fraction!r}")
    if not isinstance(n_readers, numbers.Integral) or not 1 <= n_readers <= 3:
        raise InputError(f"n_readers must be 1, 2 or 3, got {n_readers!r}")
    given = DEFAULT_CLASS_FREQUENCIES if class_frequencies is None else class_frequencies
    unknown = sorted(set(given) - set(LESION_TYPES))
    if unknown:
        raise InputError(f"class_frequencies: unknown lesion type(s) {unknown}; known: {list(LESION_TYPES)}")
    for kind, share in given.items():
        if not (isinstance(share, numbers.Real) and math.isfinite(share) and share >= 0):
            raise InputError(f"class_frequencies[{kind!r}] must be a finite number >= 0, got {share!r}")
    if sum(given.values()) <= 0:
        raise InputError("class_frequencies must give at least one lesion type a frequency > 0")
    return {kind: float(given.get(kind, 0.0)) for kind in LESION_TYPES}


# --- planning -------------------------------------------------------------------------------


def _plan_patient(rng, size, frequencies, normal_fraction) -> Patient:
    """Draw one patient's lesions, then the spine they deform."""
    lesions = [] if rng.random() < normal_fraction else _plan_lesions(rng, frequencies)
    return Patient(_build_spine(rng, size, lesions), lesions)


def _plan_lesions(rng, frequencies) -> list[Lesion]:
    """1-3 lesions with types drawn from ``frequencies`` at free, plausible sites."""
    kinds = [kind for kind in LESION_TYPES if frequencies[kind] > 0]
    shares = np.array([frequencies[kind] for kind in kinds])
    lesions: list[Lesion] = []
    for _ in range(rng.choice(_LESION_COUNTS, p=_LESION_COUNT_P)):
        for _attempt in range(5):
            kind = kinds[rng.choice(len(kinds), p=shares / shares.sum())]
            sites = [(site, w) for site, w in _candidate_sites(kind) if not _conflicts(kind, site, lesions)]
            if sites:
                weights = np.array([w for _, w in sites])
                site = sites[rng.choice(len(sites), p=weights / weights.sum())][0]
                lesions.append(Lesion(kind, site, _lesion_params(rng, kind)))
                break
    return lesions


def _candidate_sites(kind: str) -> list[tuple[tuple[int, int], float]]:
    levels = _SITE_WEIGHTS[kind].items()
    if kind == "Osteophytes":
        return [((i, c), w * cw) for i, w in levels for c, cw in enumerate(_CORNER_WEIGHTS)]
    return [((i, 0), w) for i, w in levels]


def _conflicts(kind: str, site: tuple[int, int], lesions: list[Lesion]) -> bool:
    """A second lesion of the same kind at the same site, or hardware in a collapsed body."""
    for other in lesions:
        if other.kind == kind and (other.site == site or kind in _ONE_PER_IMAGE):
            return True
        if {kind, other.kind} == {"Surgical implant", "Vertebral collapse"}:
            implant, collapse = (site, other.site) if kind == "Surgical implant" else (other.site, site)
            if collapse[0] in (implant[0], implant[0] + 1):
                return True
    return False


def _lesion_params(rng, kind: str) -> dict[str, float]:
    """Shape parameters of one lesion; ``subtlety`` (0..1) raises the readers' miss rate."""
    u = rng.uniform
    if kind == "Osteophytes":
        size = u(0.18, 0.5)
        return {"size": size, "curl": u(0.1, 1.1), "density": u(0.3, 0.55), "subtlety": (0.5 - size) / 0.32}
    if kind == "Disc space narrowing":
        narrowing = u(0.15, 0.5)
        spurs = float(rng.random() < 0.35)
        return {"narrowing": narrowing, "sclerosis": u(0.0, 0.3), "spurs": spurs, "subtlety": narrowing}
    if kind == "Foraminal stenosis":
        fill = u(0.45, 1.0)
        seed = float(rng.integers(2**31))
        spur = float(rng.random() < 0.5)
        return {"fill": fill, "density": u(0.28, 0.42), "spur": spur, "seed": seed, "subtlety": 1.0 - fill}
    if kind == "Spondylolysthesis":
        slip = u(0.1, 0.35)
        return {"slip": slip, "pars_defect": float(rng.random() < 0.5), "subtlety": (0.35 - slip) / 0.25}
    if kind == "Surgical implant":
        cage = float(rng.random() < 0.5)
        return {
            "spread": u(0.03, 0.1),
            "depth": u(0.15, 0.3),
            "tilt": u(-0.1, 0.1),
            "cage": cage,
            "subtlety": 0.0,
        }
    if kind == "Vertebral collapse":
        if rng.random() < 0.7:
            return {"ant_loss": u(0.25, 0.55), "mid_loss": 0.0, "subtlety": 0.1}  # wedge
        return {"ant_loss": 0.0, "mid_loss": u(0.2, 0.4), "subtlety": 0.1}  # biconcave
    radius = u(0.12, 0.22)  # other lesions: a focus at (u, v) in body widths and heights
    focus = {"u": u(-0.22, 0.22), "v": u(-0.15, 0.15), "radius": radius, "aspect": u(0.8, 1.3)}
    lytic = float(rng.random() < 0.6)
    return {**focus, "lytic": lytic, "strength": u(0.6, 0.9), "subtlety": (0.22 - radius) / 0.2}


def _build_spine(rng, size: int, lesions: list[Lesion]) -> list[Vertebra]:
    """T12..S1 stacked upwards from the sacrum along a lordotic curve, in image pixels."""
    k = size / 512 * rng.uniform(0.93, 1.07)
    lordosis = rng.uniform(0.6, 1.3)
    angles = np.radians(np.array([-12.0, -8.0, -3.0, 3.0, 10.0, 17.0]) * lordosis + rng.normal(0, 1.5, 6))
    angles = np.append(angles, angles[-1] + np.radians(rng.uniform(8, 16)))  # sacral slope
    heights = k * np.array([50, 52, 53, 54, 54, 53, 50]) * rng.uniform(0.95, 1.05, 7)
    widths = k * np.array([76, 80, 84, 88, 90, 90, 94]) * rng.uniform(0.95, 1.05, 7)
    gaps = k * np.array([10, 11, 12, 12, 13, 11]) * rng.uniform(0.85, 1.15, 6)
    cortex, density = rng.uniform(0.38, 0.55), rng.uniform(0.24, 0.36)
    spine = []
    for theta, w, h in zip(angles, widths, heights, strict=True):
        bone = {"cortex": cortex * rng.uniform(0.93, 1.07), "density": density * rng.uniform(0.93, 1.07)}
        spine.append(Vertebra(0.0, 0.0, theta, w, h, **bone, waist=rng.uniform(0.02, 0.05)))
    for lesion in lesions:
        index = lesion.site[0]
        if lesion.kind == "Disc space narrowing":
            gaps[index] *= lesion.params["narrowing"]
        elif lesion.kind == "Vertebral collapse":
            spine[index].ant_loss = lesion.params["ant_loss"]
            spine[index].mid_loss = lesion.params["mid_loss"]
            spine[index].density *= 1.25  # compacted trabeculae

    spine[6].cx, spine[6].cy = size * (0.5 + rng.normal(0, 0.015)), size * (0.85 + rng.normal(0, 0.015))
    for i in range(5, -1, -1):
        upper, lower = spine[i], spine[i + 1]
        # The extra term keeps the posterior gap at gaps[i]; the disc opens anteriorly (lordosis).
        turn = abs(lower.theta - upper.theta)
        step = upper.h / 2 + gaps[i] + lower.h / 2 + 0.25 * (upper.w + lower.w) * math.sin(turn)
        phi = (upper.theta + lower.theta) / 2
        upper.cx, upper.cy = lower.cx - step * math.sin(phi), lower.cy - step * math.cos(phi)

    for lesion in lesions:
        if lesion.kind == "Spondylolysthesis":
            index = lesion.site[0]
            shift = lesion.params["slip"] * spine[index].w
            dx, dy = -math.cos(spine[index].theta) * shift, math.sin(spine[index].theta) * shift
            for vert in spine[: index + 1]:
                vert.cx, vert.cy = vert.cx + dx, vert.cy + dy
    return spine


# --- rendering ------------------------------------------------------------------------------


def _render_image(patient: Patient, rng, size: int) -> tuple[np.ndarray, list[tuple[str, Box, float]]]:
    """One exposure of ``patient``: uint8 pixels and (type, box, subtlety) of each visible lesion."""
    spine = _apply_view(patient.spine, rng, size)
    film = Film.blank(size)
    film.background += _soft_tissue(rng, size, spine)
    _draw_bowel_gas(film, rng, spine)
    _draw_iliac_wings(film, rng, spine[6])
    for vert in spine:
        _draw_body(film, vert)
        _draw_posterior_elements(film, vert)
    _draw_sacrum(film, spine[6])
    # Lesion drawers take no random draws from ``rng``, so a lesion-free render of the same
    # patient and view differs only where the lesions are.
    drawn = [(lesion, _DRAWERS[lesion.kind](film, spine, lesion)) for lesion in patient.lesions]
    if rng.random() < 0.3:
        _draw_side_marker(film, rng)
    pixels = _expose(film, rng)
    mirror = rng.random() < _MIRROR_RATE
    if mirror:
        pixels = pixels[:, ::-1].copy()
    truths = []
    for lesion, box in drawn:
        if mirror:
            box = (size - 1 - box[2], box[1], size - 1 - box[0], box[3])
        clipped = _clip_box(box, size)
        if clipped is not None:
            truths.append((lesion.kind, clipped, float(np.clip(lesion.params["subtlety"], 0, 1))))
    return pixels, truths


def _apply_view(spine: list[Vertebra], rng, size: int) -> list[Vertebra]:
    """The spine as this exposure sees it: small rotation, magnification and shift."""
    angle = math.radians(rng.normal(0, 2.0))
    scale = rng.uniform(0.94, 1.06)
    shift_x, shift_y = rng.normal(0, 0.02 * size, 2)
    c, s, mid = math.cos(angle), math.sin(angle), size / 2
    moved = []
    for vert in spine:
        dx, dy = (vert.cx - mid) * scale, (vert.cy - mid) * scale
        x, y = mid + dx * c + dy * s + shift_x, mid - dx * s + dy * c + shift_y
        moved.append(replace(vert, cx=x, cy=y, theta=vert.theta + angle, w=vert.w * scale, h=vert.h * scale))
    return moved


def _soft_tissue(rng, size: int, spine: list[Vertebra]) -> np.ndarray:
    """Trunk thickness: thicker towards the pelvis, with air behind the back when it is in view."""
    x = np.arange(size, dtype=np.float32)[None, :]
    y = np.arange(size, dtype=np.float32)[:, None] / size
    spine_tip = max(vert.to_image(1.45 * vert.w, 0.0)[0] for vert in spine)
    back = spine_tip + rng.uniform(0.06, 0.3) * size
    belly = rng.uniform(-0.4, 0.04) * size
    edge = 0.015 * size
    trunk = expit((x - belly) / edge) * expit((back - x) / edge)
    lumps = ndimage.zoom(rng.standard_normal((8, 8)), size / 8, order=3)[:size, :size]
    thickness = rng.uniform(0.45, 0.75) * (1 + rng.uniform(0.1, 0.35) * y)
    return (trunk * thickness * (1 + 0.08 * lumps)).astype(np.float32)


def _draw_bowel_gas(film: Film, rng, spine: list[Vertebra]) -> None:
    """Dark gas bubbles in front of the spine."""
    size = film.shape[0]
    front = min(vert.to_image(-vert.w / 2, 0.0)[0] for vert in spine[1:6]) - 0.03 * size
    for _ in range(rng.integers(0, 7)):
        if front <= 0.04 * size:
            break
        diameter = rng.uniform(0.03, 0.09) * size
        cx, cy = rng.uniform(0.03 * size, front), rng.uniform(0.15, 0.95) * size
        gas = Frame(cx, cy, rng.uniform(0, math.pi), diameter, diameter * rng.uniform(0.5, 1.0))
        _stamp_ellipse(film.dense, gas, -rng.uniform(0.03, 0.09), soft=0.2 * diameter)


def _draw_iliac_wings(film: Film, rng, s1: Vertebra) -> None:
    """The two iliac wings, barely offset, projected over L5 and the sacrum."""
    for offset in (0.0, rng.uniform(0.1, 0.3)):
        cx, cy = s1.to_image(s1.w * (0.55 + offset), -s1.h * (1.0 + offset))
        wing = Frame(cx, cy, s1.theta - 0.4, 2.8 * s1.w, 3.6 * s1.h)
        _stamp_ellipse(film.dense, wing, 0.04, rim_width=0.04 * s1.w, rim_value=0.06, soft=2.0)


def _draw_body(film: Film, vert: Vertebra) -> None:
    """Vertebral body: cancellous core inside a cortical rim that is brightest at the endplates."""
    window = _window(film.shape, vert, -0.6 * vert.w, 0.6 * vert.w, -0.6 * vert.h, 0.6 * vert.h)
    if window is None:
        return
    sl, u, v = window
    vv, d = _body_sdf(vert, u, v)
    inside, core = _fill(d), _fill(d + max(0.04 * vert.w, 1.0))
    endplate = np.clip(np.abs(vv) / (vert.h / 2), 0, 1) ** 6
    film.dense[sl] += (inside - core) * vert.cortex * (0.7 + 0.6 * endplate)
    film.spongy[sl] += core * vert.density * (0.85 + 0.15 * np.cos(np.pi * u / vert.w))


def _draw_posterior_elements(film: Film, vert: Vertebra) -> None:
    """Pedicle, articular processes, lamina and spinous process; the gaps between two
    levels' pedicles and facets leave the dark intervertebral foramen."""
    strength = vert.cortex / 0.45
    for u0, v0, u1, v1, radius, value in _POSTERIOR_PARTS:
        start = vert.to_image(vert.w * (0.5 + u0), vert.h * v0)
        end = vert.to_image(vert.w * (0.5 + u1), vert.h * v1)
        _stamp_capsule(film.posterior, start, end, radius * vert.h, value * strength, combine=np.maximum)
    corners = np.array(_SPINOUS_PROCESS)
    xs, ys = vert.to_image(vert.w * (0.5 + corners[:, 0]), vert.h * corners[:, 1])
    _stamp_polygon(film.posterior, xs, ys, 0.11 * strength, combine=np.maximum)


def _draw_sacrum(film: Film, s1: Vertebra) -> None:
    """The sacrum below the S1 body, tapering down and backwards."""
    w, h = s1.w, s1.h
    xs, ys = s1.to_image(np.array([-0.5, 0.5, 0.38, -0.02]) * w, np.array([0.3, 0.3, 3.0, 2.9]) * h)
    _stamp_polygon(film.spongy, xs, ys, 0.75 * s1.density)
    _stamp_capsule(film.dense, s1.to_image(0.62 * w, 0.0), s1.to_image(0.45 * w, 2.7 * h), 0.12 * h, 0.15)


def _draw_side_marker(film: Film, rng) -> None:
    """A lead "L" marker in a top corner: bright metal that is not a lesion."""
    size = film.shape[0]
    side = max(int(0.05 * size), 4)
    x0 = int(rng.uniform(0.02, 0.08) * size)
    if rng.random() < 0.5:
        x0 = size - x0 - side
    y0 = int(rng.uniform(0.02, 0.08) * size)
    stroke = max(side // 5, 1)
    film.metal[y0 : y0 + side, x0 : x0 + side] += 0.4
    film.metal[y0 + stroke : y0 + side - stroke, x0 + stroke : x0 + 2 * stroke] += 2.0
    film.metal[y0 + side - 2 * stroke : y0 + side - stroke, x0 + stroke : x0 + side - stroke] += 2.0


# --- lesions: each draws into the film and returns its box ----------------------------------


def _draw_osteophyte(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """A bony beak at one corner of a body."""
    vert = spine[lesion.site[0]]
    p = lesion.params
    xs, ys, corner = _spur(film, vert, lesion.site[1], p["size"], p["curl"], p["density"])
    length = p["size"] * vert.h
    return _bbox(np.append(xs, corner[0]), np.append(ys, corner[1]), 0.2 * length + 0.03 * vert.w)


def _draw_disc_narrowing(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """The gap was narrowed when the spine was built; add sclerotic endplates and small spurs."""
    upper, lower = spine[lesion.site[0]], spine[lesion.site[0] + 1]
    p = lesion.params
    _endplate_band(film, upper, 1, p["sclerosis"])
    _endplate_band(film, lower, -1, p["sclerosis"])
    if p["spurs"]:
        _spur(film, upper, 1, 0.15, 0.9, 0.4)
        _spur(film, lower, 0, 0.12, 0.9, 0.4)
    xs, ys = [], []
    for vert, side in ((upper, 1), (lower, -1)):
        us = np.array([-0.5, 0.5, -0.5, 0.5]) * vert.w
        hh = _half_height(vert, us)
        x, y = vert.to_image(us, side * np.concatenate([hh[:2], hh[2:] - 0.25 * vert.h]))
        xs.append(x)
        ys.append(y)
    return _bbox(np.concatenate(xs), np.concatenate(ys), 0.04 * upper.w)


def _draw_foraminal_stenosis(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """Bony overgrowth filling the dark foramen behind the disc."""
    upper, lower = spine[lesion.site[0]], spine[lesion.site[0] + 1]
    p = lesion.params
    foramen = _foramen_frame(upper, lower)
    shape_rng = np.random.default_rng(int(p["seed"]))  # same shape in every exposure
    for _ in range(shape_rng.integers(3, 7)):
        cx, cy = foramen.to_image(
            foramen.w * shape_rng.uniform(-0.3, 0.3), foramen.h * shape_rng.uniform(-0.2, 0.35)
        )
        radius = foramen.w * p["fill"] * shape_rng.uniform(0.25, 0.45)
        theta = foramen.theta + shape_rng.uniform(-0.5, 0.5)
        blob = Frame(cx, cy, theta, 2 * radius * shape_rng.uniform(0.7, 1.4), 2 * radius)
        _stamp_ellipse(film.posterior, blob, p["density"] * shape_rng.uniform(0.8, 1.0), combine=np.maximum)
    if p["spur"]:
        _spur(film, upper, 3, 0.2, 0.3, 0.35)
    xs, ys = foramen.to_image(
        np.array([-0.6, 0.6, -0.6, 0.6]) * foramen.w, np.array([-0.55, -0.55, 0.55, 0.55]) * foramen.h
    )
    return _bbox(xs, ys, 0.0)


def _draw_spondylolisthesis(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """The upper body was slipped forwards when the spine was built; sometimes a pars defect."""
    upper, lower = spine[lesion.site[0]], spine[lesion.site[0] + 1]
    if lesion.params["pars_defect"]:
        start = upper.to_image(0.84 * upper.w, -0.02 * upper.h)
        end = upper.to_image(0.96 * upper.w, 0.14 * upper.h)
        _stamp_capsule(film.dense, start, end, 0.03 * upper.w, -0.3)
    xs, ys = [], []
    for vert, side in ((upper, 1), (lower, -1)):
        us = np.array([-0.5, 0.5, -0.5, 0.5]) * vert.w
        hh = _half_height(vert, us)
        x, y = vert.to_image(us, side * np.array([hh[0], hh[1], 0.1 * vert.h, 0.1 * vert.h]))
        xs.append(x)
        ys.append(y)
    return _bbox(np.concatenate(xs), np.concatenate(ys), 0.05 * upper.w)


def _draw_implant(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """Threaded pedicle screws in two adjacent vertebrae, a rod joining them, maybe a cage."""
    p = lesion.params
    upper, lower = spine[lesion.site[0]], spine[lesion.site[0] + 1]
    xs, ys, heads = [], [], []
    for vert in (upper, lower):
        w, h = vert.w, vert.h
        for side in (0.0, p["spread"]):  # the left and right screws almost superimpose
            head = vert.to_image(0.95 * w, (side - 0.2) * h)
            tip = vert.to_image((p["depth"] - 0.5) * w, (side - 0.12 + p["tilt"]) * h)
            _stamp_capsule(film.metal, head, tip, 0.045 * w, 1.5, thread_pitch=0.065 * w)
            xs += [head[0], tip[0]]
            ys += [head[1], tip[1]]
        tulip = (vert.to_image(0.97 * w, -0.3 * h), vert.to_image(0.97 * w, -0.1 * h))
        _stamp_capsule(film.metal, *tulip, 0.06 * w, 2.0)
        heads.append(vert.to_image(0.97 * w, -0.2 * h))
        xs += [tulip[0][0], tulip[1][0]]
        ys += [tulip[0][1], tulip[1][1]]
    _stamp_capsule(film.metal, heads[0], heads[1], 0.04 * upper.w, 2.0)
    if p["cage"]:
        disc = _disc_frame(upper, lower)
        for u in (-0.3, 0.3):
            marker = disc.to_image(u * disc.w, 0.0)
            _stamp_capsule(film.metal, marker, marker, 0.035 * disc.w, 2.0)
            xs.append(marker[0])
            ys.append(marker[1])
    return _bbox(np.array(xs), np.array(ys), 0.08 * upper.w)


def _draw_collapse(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """The body was wedged or crushed when the spine was built; add the condensation band."""
    vert = spine[lesion.site[0]]
    _endplate_band(film, vert, -1, 0.2)
    us = np.array([-0.5, 0.0, 0.5]) * vert.w
    hh = _half_height(vert, us)
    xs, ys = vert.to_image(np.concatenate([us, us]), np.concatenate([-hh, hh]))
    return _bbox(xs, ys, 0.05 * vert.w)


def _draw_other_lesion(film: Film, spine: list[Vertebra], lesion: Lesion) -> Box:
    """A round lytic (dark, maybe rimmed) or sclerotic (bright) focus inside a body."""
    vert = spine[lesion.site[0]]
    p = lesion.params
    radius = p["radius"] * vert.h
    cx, cy = vert.to_image(p["u"] * vert.w, p["v"] * vert.h)
    focus = Frame(cx, cy, vert.theta, 2 * radius * p["aspect"], 2 * radius)
    if p["lytic"]:
        pad = 0.3 * radius + 2
        window = _window(
            film.shape, focus, -focus.w / 2 - pad, focus.w / 2 + pad, -radius - pad, radius + pad
        )
        if window is not None:
            sl, u, v = window
            d = _ellipse_sdf(focus, u, v)
            film.spongy[sl] *= 1 - p["strength"] * _fill(d)
            film.dense[sl] += 0.12 * (_fill(d - 0.2 * radius) - _fill(d))  # sclerotic margin
    else:
        _stamp_ellipse(film.dense, focus, 0.5 * p["strength"])
    xs, ys = focus.to_image(
        np.array([-0.5, 0.5, -0.5, 0.5]) * focus.w, np.array([-0.5, -0.5, 0.5, 0.5]) * focus.h
    )
    return _bbox(xs, ys, 0.35 * radius)


_DRAWERS: dict[str, Callable[[Film, list[Vertebra], Lesion], Box]] = {
    "Osteophytes": _draw_osteophyte,
    "Disc space narrowing": _draw_disc_narrowing,
    "Foraminal stenosis": _draw_foraminal_stenosis,
    "Spondylolysthesis": _draw_spondylolisthesis,
    "Surgical implant": _draw_implant,
    "Vertebral collapse": _draw_collapse,
    "Other lesions": _draw_other_lesion,
}


def _spur(film: Film, vert: Vertebra, corner: int, size: float, curl: float, density: float):
    """A bright bony beak from a body corner, pointing outwards and ``curl`` radians towards
    the disc; returns its vertices (xs, ys) and the corner (x, y)."""
    su = -1.0 if corner < 2 else 1.0  # anterior corners are 0 and 1
    sv = -1.0 if corner % 2 == 0 else 1.0  # superior corners are 0 and 2
    half_w = vert.w / 2
    half_h = float(_half_height(vert, su * half_w))
    length = size * vert.h
    reach = 0.8 * length
    us = su * np.array(
        [
            half_w - 0.05 * length,
            half_w + 0.35 * length,
            half_w + reach * math.cos(curl),
            half_w - 0.5 * length,
        ]
    )
    vs = sv * np.array(
        [half_h - 0.7 * length, half_h - 0.2 * length, half_h + reach * math.sin(curl), half_h]
    )
    xs, ys = vert.to_image(us, vs)
    _stamp_polygon(film.dense, xs, ys, density)
    return xs, ys, vert.to_image(su * half_w, sv * half_h)


def _endplate_band(film: Film, vert: Vertebra, side: int, strength: float) -> None:
    """Brighten the bone along one endplate (side -1: superior, +1: inferior)."""
    window = _window(film.shape, vert, -0.6 * vert.w, 0.6 * vert.w, -0.6 * vert.h, 0.6 * vert.h)
    if window is None:
        return
    sl, u, v = window
    vv, d = _body_sdf(vert, u, v)
    band = np.clip(1 - (vert.h / 2 - side * vv) / (0.2 * vert.h), 0, 1)
    film.dense[sl] += strength * _fill(d) * band


def _disc_frame(upper: Vertebra, lower: Vertebra) -> Frame:
    """The disc space between two bodies (h is its height at the centre)."""
    ux, uy = upper.to_image(0.0, upper.h / 2)
    lx, ly = lower.to_image(0.0, -lower.h / 2)
    theta = (upper.theta + lower.theta) / 2
    return Frame((ux + lx) / 2, (uy + ly) / 2, theta, (upper.w + lower.w) / 2, math.hypot(lx - ux, ly - uy))


def _foramen_frame(upper: Vertebra, lower: Vertebra) -> Frame:
    """The intervertebral foramen: behind the disc, from one pedicle down to the next."""
    tx, ty = upper.to_image(0.68 * upper.w, -0.07 * upper.h)
    bx, by = lower.to_image(0.68 * lower.w, -0.33 * lower.h)
    theta = (upper.theta + lower.theta) / 2
    return Frame((tx + bx) / 2, (ty + by) / 2, theta, 0.36 * upper.w, math.hypot(bx - tx, by - ty))


# --- geometry and rasterisation helpers -----------------------------------------------------


def _half_height(vert: Vertebra, u):
    """Half the body height at local ``u`` after any collapse."""
    w = vert.w
    loss = vert.ant_loss * np.clip(0.5 - u / w, 0, 1) + vert.mid_loss * np.clip(1 - (2 * u / w) ** 2, 0, 1)
    return vert.h / 2 * (1 - loss)


def _body_sdf(vert: Vertebra, u, v):
    """Height-normalised v and the signed distance (px, negative inside) to the body outline."""
    w, h = vert.w, vert.h
    vv = v * (h / 2) / _half_height(vert, u)
    u_waisted = u + np.sign(u) * vert.waist * w * np.clip(1 - (2 * vv / h) ** 2, 0, 1)  # concave walls
    return vv, _rounded_box(u_waisted, vv, w / 2, h / 2, 0.2 * min(w, h))


def _rounded_box(u, v, half_w, half_h, radius):
    qu, qv = np.abs(u) - half_w + radius, np.abs(v) - half_h + radius
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - radius


def _ellipse_sdf(frame: Frame, u, v):
    a, b = frame.w / 2, frame.h / 2
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * min(a, b)


def _fill(distance, soft: float = 0.75):
    """Anti-aliased coverage of a signed distance."""
    return np.clip(0.5 - distance / soft, 0, 1)


def _window(shape, frame: Frame, u0: float, u1: float, v0: float, v1: float):
    """Pixel slices covering a local rectangle of ``frame`` and local coordinates of their pixels."""
    xs, ys = frame.to_image(np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))
    x0, x1 = max(int(xs.min()), 0), min(int(math.ceil(xs.max())) + 1, shape[1])
    y0, y1 = max(int(ys.min()), 0), min(int(math.ceil(ys.max())) + 1, shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.ogrid[y0:y1, x0:x1]
    u, v = frame.to_local(xx.astype(np.float32), yy.astype(np.float32))
    return (slice(y0, y1), slice(x0, x1)), u, v


def _stamp_ellipse(
    layer, frame: Frame, value: float, rim_width=0.0, rim_value=0.0, soft=0.75, combine=np.add
):
    pad = soft + 2
    window = _window(
        layer.shape, frame, -frame.w / 2 - pad, frame.w / 2 + pad, -frame.h / 2 - pad, frame.h / 2 + pad
    )
    if window is None:
        return
    sl, u, v = window
    d = _ellipse_sdf(frame, u, v)
    inside = _fill(d, soft)
    region = layer[sl]
    combine(region, value * inside, out=region)
    if rim_width:
        layer[sl] += rim_value * (inside - _fill(d + rim_width))


def _stamp_capsule(layer, start, end, radius: float, value: float, thread_pitch: float = 0.0, combine=np.add):
    """A segment of the given radius; ``thread_pitch`` makes the radius ripple like a screw thread."""
    (x0, y0), (x1, y1) = start, end
    pad = 1.3 * radius + 2
    ya, yb = max(int(min(y0, y1) - pad), 0), min(int(max(y0, y1) + pad) + 1, layer.shape[0])
    xa, xb = max(int(min(x0, x1) - pad), 0), min(int(max(x0, x1) + pad) + 1, layer.shape[1])
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.ogrid[ya:yb, xa:xb]
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(length**2, 1e-9), 0, 1)
    distance = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
    if thread_pitch:
        radius = radius * (1 + 0.28 * np.sin(2 * np.pi * t * length / thread_pitch))
    region = layer[ya:yb, xa:xb]
    combine(region, value * _fill(distance - radius), out=region)


def _stamp_polygon(layer: np.ndarray, xs, ys, value: float, combine=np.add) -> None:
    """A convex polygon (vertices in either order)."""
    ya, yb = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, layer.shape[0])
    xa, xb = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, layer.shape[1])
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.ogrid[ya:yb, xa:xb]
    mx, my = xs.mean(), ys.mean()
    distance = np.full((yb - ya, xb - xa), -np.inf)
    for i in range(len(xs)):
        ex, ey = xs[(i + 1) % len(xs)] - xs[i], ys[(i + 1) % len(xs)] - ys[i]
        norm = math.hypot(ex, ey)
        if norm == 0:
            continue
        nx, ny = ey / norm, -ex / norm
        if (mx - xs[i]) * nx + (my - ys[i]) * ny > 0:  # make the normal point outwards
            nx, ny = -nx, -ny
        distance = np.maximum(distance, (xx - xs[i]) * nx + (yy - ys[i]) * ny)
    region = layer[ya:yb, xa:xb]
    combine(region, value * _fill(distance), out=region)


def _bbox(xs, ys, margin: float) -> Box:
    return (
        float(np.min(xs) - margin),
        float(np.min(ys) - margin),
        float(np.max(xs) + margin),
        float(np.max(ys) + margin),
    )


def _clip_box(box: Box, size: int) -> Box | None:
    """The box clipped to the image; None when too little of it is left."""
    x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], size - 1.0), min(box[3], size - 1.0)
    return (x0, y0, x1, y1) if x1 - x0 >= 3 and y1 - y0 >= 3 else None


# --- film and readers -----------------------------------------------------------------------


def _trabecular_texture(rng, size: int) -> np.ndarray:
    """Band-passed noise, elongated vertically like the load-bearing trabeculae."""
    k = size / 512
    noise = rng.standard_normal((size, size)).astype(np.float32)
    fine = ndimage.gaussian_filter(noise, (max(1.6 * k, 0.6), max(0.9 * k, 0.5)))
    texture = fine - ndimage.gaussian_filter(noise, 3 * k)
    return texture / (texture.std() + 1e-6)


def _expose(film: Film, rng) -> np.ndarray:
    """Attenuation to 8-bit film: exposure, window, gamma, blur, heel effect and quantum noise."""
    size = film.shape[0]
    k = size / 512
    texture = _trabecular_texture(rng, size)
    anatomy = film.background + film.dense + film.posterior + film.spongy * (1 + 0.25 * texture)
    anatomy = np.maximum(anatomy, 0)
    gain = rng.uniform(1.0, 1.6)
    # The window comes from anatomy alone so that metal saturates instead of dimming the bone.
    lo, hi = np.percentile(-np.expm1(-gain * anatomy), [rng.uniform(0.5, 3.0), rng.uniform(99.5, 99.95)])
    hi += rng.uniform(0.0, 0.1) * (hi - lo)
    bright = -np.expm1(-gain * (anatomy + film.metal))
    image = np.clip((bright - lo) / max(hi - lo, 1e-6), 0, 1) ** rng.uniform(0.9, 1.6)
    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 1.1) * k)
    image *= 1 + rng.uniform(-0.1, 0.1) * np.linspace(-0.5, 0.5, size, dtype=np.float32)[:, None]
    grain = rng.standard_normal(image.shape).astype(np.float32)
    grain += 1.5 * ndimage.gaussian_filter(grain, 1.2 * k)
    image += rng.uniform(0.01, 0.035) * np.sqrt(image + 0.02) * grain
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _read_image(rng, truths, readers, box_scale, allowed, size, ids) -> list[tuple]:
    """CSV rows from the 1-3 readers of one image; a reader who boxes nothing says "No finding"."""
    image_id, study_id, series_id = ids
    count = min(int(rng.choice(_READER_COUNTS, p=_READER_COUNT_P)), len(readers))
    rows = []
    for r in sorted(rng.choice(len(readers), size=count, replace=False)):
        rad_id = readers[r]
        boxes = []
        for kind, box, subtlety in truths:
            if rng.random() < _MISS_RATE + 0.1 * subtlety:
                continue
            label = kind
            if rng.random() < _RELABEL_RATE:
                options = [other for other in _CONFUSIONS[kind] if other in allowed]
                if options:
                    label = options[rng.integers(len(options))]
            boxes.append((label, _jitter_box(rng, box, box_scale[rad_id], size)))
        rows += [(image_id, rad_id, label, *box, study_id, series_id) for label, box in boxes]
        if not boxes:
            rows.append((image_id, rad_id, NO_FINDING, "", "", "", "", study_id, series_id))
    return rows


def _jitter_box(rng, box: Box, scale: float, size: int) -> tuple[int, int, int, int]:
    """A reader's integer box: the true box moved and resized by a few percent."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.normal(0, 0.03) * width
    cy = (y0 + y1) / 2 + rng.normal(0, 0.03) * height
    width *= scale * (1 + rng.normal(0, 0.04))
    height *= scale * (1 + rng.normal(0, 0.04))
    xmin = int(np.clip(math.floor(cx - width / 2), 0, size - 3))
    ymin = int(np.clip(math.floor(cy - height / 2), 0, size - 3))
    xmax = int(np.clip(math.ceil(cx + width / 2), xmin + 2, size - 1))
    ymax = int(np.clip(math.ceil(cy + height / 2), ymin + 2, size - 1))
    return xmin, ymin, xmax, ymax


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, format="PNG")


def _save_csv(rows: list[tuple], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(rows)
