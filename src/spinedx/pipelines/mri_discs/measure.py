"""Quantitative evidence per disc: height in mm (px without spacing) and the ratio to its neighbours.

Height is the vertical extent of the disc box, which by the SPIDER convention spans the disc and
its adjacent endplates; a narrowed disc has a smaller box than its neighbours, so the ratio to the
mean of the adjacent discs is what separates narrowing from a small patient.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiscHeight:
    height_px: float
    height_mm: float | None
    height_ratio: float | None


def disc_heights(
    boxes: list[tuple[float, float, float, float]],
    ivd_labels: list[int],
    pixel_spacing_mm: tuple[float, float] | None,
) -> list[DiscHeight]:
    """One measurement per box. The ratio uses the discs whose ivd_label is one above or below."""
    heights = [float(ymax - ymin) for _, ymin, _, ymax in boxes]
    by_label = dict(zip(ivd_labels, heights, strict=True))
    results = []
    for label, height in zip(ivd_labels, heights, strict=True):
        neighbours = [by_label[n] for n in (label - 1, label + 1) if n in by_label]
        ratio = height / (sum(neighbours) / len(neighbours)) if neighbours else None
        height_mm = height * pixel_spacing_mm[0] if pixel_spacing_mm else None
        results.append(DiscHeight(height, height_mm, ratio))
    return results
