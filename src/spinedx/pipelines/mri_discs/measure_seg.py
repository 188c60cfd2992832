"""Per-disc measurements from a spine label map: posterior extent, canal width and disc area.

Geometry follows the display convention of :class:`~spinedx.io.volumes.SagittalSlice`: anterior
is left, so "posterior" is +x. Distances are computed on pixel centres scaled by the pixel spacing
(mm), or in pixels when the spacing is unknown (``unit`` says which).

- ``posterior_extent``: how far the disc's mask reaches posterior to the line through the
  posterior corners of the two adjacent vertebral bodies (the corners next to the disc), >= 0.
  A herniation or bulge pushes disc tissue past that line; a normal disc stays behind it.
- ``canal_ap``: width of the spinal canal along the perpendicular to that line, through the
  disc's centroid (the first run of canal pixels behind the disc).
- ``disc_area``: disc-mask area inside the disc box.

A measurement the label map cannot support (no disc pixels in the box, a missing neighbouring
vertebra, no canal near the disc) is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spinedx.io.masks import CANAL, DISC, VERTEBRA

CORNER_BAND = 0.25
"""Fraction of a vertebra's rows next to the disc that is searched for its posterior corner."""
RAY_STEP_PX = 0.25


@dataclass(frozen=True)
class DiscSegMeasurements:
    posterior_extent: float | None
    canal_ap: float | None
    disc_area: float | None
    unit: str
    """"mm" (areas mm²) when the pixel spacing is known, else "px" (areas px²)."""


def _largest_component(mask: np.ndarray) -> np.ndarray:
    pieces, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    return pieces == int(np.argmax(sizes)) + 1


def _posterior_corner(component: np.ndarray, near_bottom: bool, scale: np.ndarray) -> np.ndarray:
    """(x, y) in mm of the most posterior pixel among the rows of ``component`` nearest the disc."""
    rows = np.flatnonzero(component.any(axis=1))
    band = max(1, int(round(CORNER_BAND * len(rows))))
    chosen = rows[-band:] if near_bottom else rows[:band]
    ys, xs = np.nonzero(component[chosen])
    best = int(np.argmax(xs))
    return np.array([xs[best], chosen[ys[best]]], dtype=np.float64) * scale


def _neighbour_vertebrae(labels: np.ndarray, window: tuple[slice, slice], disc_y: float):
    """Largest vertebra piece above and below ``disc_y`` inside ``window`` (full-image masks)."""
    local = np.zeros(labels.shape, dtype=bool)
    local[window] = labels[window] == VERTEBRA
    pieces, n = ndimage.label(local)
    above = below = None
    best_above = best_below = 0
    for index, (sl, size) in enumerate(
        zip(ndimage.find_objects(pieces), np.bincount(pieces.ravel())[1:], strict=True), start=1
    ):
        centre = 0.5 * (sl[0].start + sl[0].stop - 1)
        if centre < disc_y and size > best_above:
            above, best_above = pieces == index, size
        elif centre > disc_y and size > best_below:
            below, best_below = pieces == index, size
    return above, below


def measure_disc(
    labels: np.ndarray,
    box: tuple[float, float, float, float],
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> DiscSegMeasurements:
    """Measurements of the disc in ``box`` (xmin, ymin, xmax, ymax, pixels) on ``labels`` (H, W)."""
    unit = "mm" if pixel_spacing_mm else "px"
    row_mm, col_mm = pixel_spacing_mm or (1.0, 1.0)
    scale = np.array([col_mm, row_mm])
    height, width = labels.shape
    xmin, ymin, xmax, ymax = box
    box_h, box_w = ymax - ymin, xmax - xmin

    def clip_slice(low: float, high: float, size: int) -> slice:
        return slice(max(0, int(np.floor(low))), min(size, int(np.ceil(high))))

    in_box = (clip_slice(ymin, ymax, height), clip_slice(xmin, xmax, width))
    disc_in_box = np.zeros(labels.shape, dtype=bool)
    disc_in_box[in_box] = labels[in_box] == DISC
    if not disc_in_box.any():
        return DiscSegMeasurements(None, None, None, unit)
    disc_area = float(disc_in_box.sum()) * row_mm * col_mm
    # The disc reaches beyond its box when it herniates: follow its mask in a wider window.
    window = (clip_slice(ymin - box_h, ymax + box_h, height), clip_slice(xmin - box_w, xmax + box_w, width))
    wide = np.zeros(labels.shape, dtype=bool)
    wide[window] = labels[window] == DISC
    pieces, _ = ndimage.label(wide)
    disc = np.isin(pieces, np.unique(pieces[disc_in_box & (pieces > 0)]))
    ys, xs = np.nonzero(disc)
    points = np.stack([xs, ys], axis=1) * scale
    centroid = points.mean(axis=0)

    above, below = _neighbour_vertebrae(labels, window, centroid[1] / row_mm)
    posterior_extent = None
    normal = np.array([1.0, 0.0])
    if above is not None and below is not None:
        upper = _posterior_corner(above, near_bottom=True, scale=scale)
        lower = _posterior_corner(below, near_bottom=False, scale=scale)
        direction = (lower - upper) / max(np.linalg.norm(lower - upper), 1e-9)
        normal = np.array([direction[1], -direction[0]])
        normal = normal if normal[0] >= 0 else -normal
        posterior_extent = max(0.0, float(((points - upper) @ normal).max()))
    canal_ap = _canal_width(labels, window, centroid, normal, scale)
    return DiscSegMeasurements(posterior_extent, canal_ap, disc_area, unit)


def _canal_width(labels, window, centroid: np.ndarray, normal: np.ndarray, scale: np.ndarray) -> float | None:
    """Length of the first canal run along ``normal`` from the disc centroid (mm or px)."""
    canal = labels == CANAL
    if not canal[window].any():
        return None
    reach = float(np.hypot(window[0].stop - window[0].start, window[1].stop - window[1].start)) * scale.max()
    step = RAY_STEP_PX * scale.min()
    distances = np.arange(0.0, reach, step)
    xy_px = (centroid[None, :] + distances[:, None] * normal[None, :]) / scale
    inside = ndimage.map_coordinates(canal.astype(np.uint8), [xy_px[:, 1], xy_px[:, 0]], order=0, cval=0) > 0
    if not inside.any():
        return 0.0
    start = int(np.argmax(inside))
    after = np.flatnonzero(~inside[start:])
    run = int(after[0]) if after.size else len(inside) - start
    return float(run * step)
