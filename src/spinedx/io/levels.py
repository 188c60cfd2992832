"""Spinal disc levels and the per-disc grades: the vocabulary every importer, model and report shares.

``ivd_label`` counts intervertebral discs upwards from 1 = L5/S1 (SPIDER's convention).
"""

from __future__ import annotations

GRADE_COLUMNS = (
    "herniation",
    "bulging",
    "narrowing",
    "pfirrmann",
    "modic",
    "up_endplate",
    "low_endplate",
    "spondylolisthesis",
)


GRADE_RANGES: dict[str, tuple[int, int]] = {
    "herniation": (0, 1),
    "bulging": (0, 1),
    "narrowing": (0, 1),
    "pfirrmann": (1, 5),
    "modic": (0, 3),
    "up_endplate": (0, 1),
    "low_endplate": (0, 1),
    "spondylolisthesis": (0, 1),
}
"""Inclusive (low, high) of each grade."""


_VERTEBRAE = (
    ["S1", "L5", "L4", "L3", "L2", "L1"]
    + [f"T{i}" for i in range(12, 0, -1)]
    + [f"C{i}" for i in range(7, 1, -1)]
)


LEVEL_NAMES: dict[int, str] = {
    label: f"{_VERTEBRAE[label]}/{_VERTEBRAE[label - 1]}" for label in range(1, len(_VERTEBRAE))
}
"""Disc label -> level name: 1 = "L5/S1", 2 = "L4/L5", ..., 6 = "T12/L1", 9 = "T9/T10", ... 23 = "C2/C3"."""


def level_name(ivd_label: int) -> str:
    """The level name of a disc label (``IVD<label>`` when it has no anatomical name)."""
    return LEVEL_NAMES.get(int(ivd_label), f"IVD{int(ivd_label)}")
