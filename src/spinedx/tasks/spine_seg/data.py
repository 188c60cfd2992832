"""Segmentation samples from the three mask sources, with which classes each image labels.

A source is a folder with ``images/`` and ``masks/`` (same file names). Its kind is told by
:func:`detect_kind`:

- ``synth`` (``spinedx synth mri``): ``masks/labels.json``, all four classes labelled, spacing from
  ``spacing.csv``, patient from ``series.csv``.
- ``vertebra-colour`` (spider-vertebra-masks): RGB masks, one colour per vertebra; only vertebra is
  labelled (disc and canal pixels are inside "background"), patient = file name before ``_``.
- ``disc-vertebra-index`` (mri-seg-small): greyscale 0 background, 1 disc, 2 vertebra; canal is not
  labelled. Its masks are incomplete on some slices (three empty, two with discs only), so a class
  absent from one of its masks counts as unlabelled there, and an empty mask is skipped. The
  patients are not recorded: each image is its own group.

A sample's ``labelled`` classes are the foreground classes its mask labels; training
(:mod:`spinedx.tasks.spine_seg.train`) never teaches "absent" for the others, and evaluation does not
score them on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from spinedx.data.folds import patient_folds as assign_patient_folds
from spinedx.errors import InputError
from spinedx.io.images import read_image
from spinedx.io.masks import (
    CANAL,
    DISC,
    LABELS_FILE,
    MRI_SEG_SMALL_MAPPING,
    VERTEBRA,
    read_colour_mask,
    read_index_mask,
    read_label_table,
    vertebral_bodies,
)

SYNTH, VERTEBRA_COLOUR, DISC_VERTEBRA_INDEX = "synth", "vertebra-colour", "disc-vertebra-index"
KINDS = (SYNTH, VERTEBRA_COLOUR, DISC_VERTEBRA_INDEX)
LABELLED_BY_KIND: dict[str, tuple[int, ...]] = {
    SYNTH: (VERTEBRA, DISC, CANAL),
    VERTEBRA_COLOUR: (VERTEBRA,),
    DISC_VERTEBRA_INDEX: (VERTEBRA, DISC),
}


@dataclass
class SegSample:
    image_id: str
    source: str
    group: str
    """Patient (``source/patient``); samples of one group never straddle folds or bootstrap draws."""
    pixels: np.ndarray
    """(H, W) float32 in [0, 1] as read."""
    labels: np.ndarray
    """(H, W) uint8 label map (:data:`spinedx.io.masks.SEG_LABELS`, 255 = no supervision)."""
    labelled: tuple[int, ...]
    """Foreground classes this mask labels."""
    pixel_spacing_mm: tuple[float, float] | None


def detect_kind(root: Path) -> str:
    masks = root / "masks"
    if (masks / LABELS_FILE).is_file():
        return SYNTH
    first = next((p for p in sorted(masks.glob("*.png"))), None)
    if first is None:
        raise InputError(f"{masks}: no PNG masks found")
    with Image.open(first) as image:
        return VERTEBRA_COLOUR if image.mode in ("RGB", "RGBA", "P") else DISC_VERTEBRA_INDEX


def load_seg_source(root: str | Path, kind: str | None = None, limit: int | None = None) -> list[SegSample]:
    """Every image of ``root`` with its mask (``limit``: the first N by name, for quick runs)."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise InputError(f"{root}: expected images/ and masks/ folders")
    kind = kind or detect_kind(root)
    if kind not in KINDS:
        raise InputError(f"{root}: unknown mask source kind '{kind}' (known: {', '.join(KINDS)})")
    spacing, patients = _synth_tables(root) if kind == SYNTH else ({}, {})
    mapping = read_label_table(root / "masks" / LABELS_FILE) if kind == SYNTH else MRI_SEG_SMALL_MAPPING
    samples = []
    mask_paths = sorted((root / "masks").glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    for mask_path in mask_paths[:limit]:
        image_path = root / "images" / mask_path.name
        if not image_path.is_file():
            raise InputError(f"{mask_path}: no image {image_path.name} in {root / 'images'}")
        pixels = read_image(image_path).pixels
        if kind == VERTEBRA_COLOUR:
            labels = vertebral_bodies(read_colour_mask(mask_path, shape=pixels.shape))
            labelled = LABELLED_BY_KIND[kind]
            group = mask_path.stem.split("_")[0]
        else:
            labels = read_index_mask(mask_path, mapping, shape=pixels.shape)
            labelled = LABELLED_BY_KIND[kind]
            group = patients.get(mask_path.stem, mask_path.stem)
            if kind == DISC_VERTEBRA_INDEX:
                labelled = tuple(c for c in labelled if (labels == c).any())
                if not labelled:
                    continue
        samples.append(
            SegSample(
                image_id=mask_path.stem,
                source=root.name,
                group=f"{root.name}/{group}",
                pixels=pixels,
                labels=labels,
                labelled=labelled,
                pixel_spacing_mm=spacing.get(mask_path.stem),
            )
        )
    if not samples:
        raise InputError(f"{root / 'masks'}: no labelled masks")
    return samples


def _synth_tables(root: Path) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    spacing, patients = {}, {}
    if (root / "spacing.csv").is_file():
        table = pd.read_csv(root / "spacing.csv", dtype={"image_id": str})
        spacing = {r.image_id: (float(r.row_mm), float(r.col_mm)) for r in table.itertuples()}
    if (root / "series.csv").is_file():
        table = pd.read_csv(root / "series.csv", dtype={"image_id": str, "patient": str})
        patients = dict(zip(table["image_id"], table["patient"], strict=True))
    return spacing, patients


def patient_folds(samples: list[SegSample], n_folds: int, seed: int) -> np.ndarray:
    """Fold index per sample: whole patients per fold, each source spread over the folds."""
    return assign_patient_folds([s.group for s in samples], n_folds, seed, strata=[s.source for s in samples])
