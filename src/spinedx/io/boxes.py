"""Box validation in one place: every consumer of annotation boxes asks this module.

A box is ``(xmin, ymin, xmax, ymax)`` in pixels of its image (columns, rows), the far edge
exclusive: ``xmax == width`` touches the right border and is inside.

* :func:`box_problems` lists what is wrong with a box without deciding what to do about it
  (``spinedx data check`` reports every problem).
* :func:`validate_box` decides for consumers that use the box (crops for training and
  prediction, importers): a box partly outside the image is clipped to it and a warning
  sentence says so; a degenerate box (a non-finite coordinate, zero or negative width or
  height) or one lying entirely outside the image raises :class:`~spinedx.errors.InputError`
  naming ``where`` (the file and row, or the image).
* :func:`validate_rows` applies :func:`validate_box` to the boxed rows of an annotation table
  for one image, so that a batch keeps its good rows and reports the bad ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: box checks of single boxes run without pandas
    import pandas as pd

from spinedx.errors import InputError

Box = tuple[float, float, float, float]
_NAMES = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class BoxProblems:
    """What is wrong with one box; every list holds short clauses such as ``"xmax 3 <= xmin 5"``."""

    degenerate: list[str] = field(default_factory=list)
    """Non-finite coordinates, or no positive width/height: the box cannot be used at all."""
    outside: list[str] = field(default_factory=list)
    """Coordinates beyond the image (negative, or past the width/height when the size is known)."""
    fully_outside: bool = False
    """No part of the box overlaps the image."""

    @property
    def ok(self) -> bool:
        return not (self.degenerate or self.outside)


def format_box(box: Sequence[float]) -> str:
    """``"(xmin 1, ymin 2, xmax 3, ymax 4)"``: how messages show a box."""
    return "(" + ", ".join(f"{name} {float(value):g}" for name, value in zip(_NAMES, box, strict=True)) + ")"


def box_problems(box: Sequence[float], width: int | None = None, height: int | None = None) -> BoxProblems:
    """Every problem of ``box`` against a ``width`` x ``height`` image (size None: unknown image).

    Without a size only negative coordinates count as outside.
    """
    values = [float(v) for v in box]
    if len(values) != 4:
        raise ValueError(f"a box has 4 coordinates, got {len(values)}")
    named = list(zip(_NAMES, values, strict=True))
    degenerate = [
        f"{name} {value:g} is not a finite number" for name, value in named if not math.isfinite(value)
    ]
    if degenerate:
        return BoxProblems(degenerate=degenerate)
    xmin, ymin, xmax, ymax = values
    if xmax <= xmin:
        degenerate.append(f"xmax {xmax:g} <= xmin {xmin:g}")
    if ymax <= ymin:
        degenerate.append(f"ymax {ymax:g} <= ymin {ymin:g}")

    outside = [f"negative {name} {value:g}" for name, value in named if value < 0]
    if width is not None:
        outside += [f"{name} {value:g} > image width {width}" for name, value in named[0::2] if value > width]
    if height is not None:
        outside += [
            f"{name} {value:g} > image height {height}" for name, value in named[1::2] if value > height
        ]
    no_overlap = xmax <= 0 or ymax <= 0
    if width is not None and height is not None:
        no_overlap = no_overlap or xmin >= width or ymin >= height
    return BoxProblems(degenerate=degenerate, outside=outside, fully_outside=no_overlap and not degenerate)


def validate_box(box: Sequence[float], width: int, height: int, where: str) -> tuple[Box, str | None]:
    """``box`` made safe to use on a ``width`` x ``height`` image: ``(clipped box, warning or None)``.

    A box partly outside the image is clipped to ``[0, width] x [0, height]`` and the warning
    sentence (naming ``where``) says so. Raises :class:`InputError` naming ``where`` for a
    degenerate box or one entirely outside the image.
    """
    problems = box_problems(box, width, height)
    shown = format_box(box)
    if problems.degenerate:
        raise InputError(f"{where}: box {shown} has no area: {'; '.join(problems.degenerate)}")
    if problems.fully_outside:
        raise InputError(f"{where}: box {shown} lies entirely outside the {width}x{height} image")
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    if not problems.outside:
        return (xmin, ymin, xmax, ymax), None
    clipped = (max(xmin, 0.0), max(ymin, 0.0), min(xmax, float(width)), min(ymax, float(height)))
    return clipped, (
        f"{where}: box {shown} reaches outside the {width}x{height} image "
        f"({'; '.join(problems.outside)}); clipped to {format_box(clipped)}"
    )


@dataclass
class ValidatedRows:
    """The rows of one image whose boxes can be used (boxes clipped), and what was said about the rest."""

    rows: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def validate_rows(
    rows: pd.DataFrame, width: int, height: int, where: Callable[[object], str]
) -> ValidatedRows:
    """Validate the boxes of ``rows`` (columns xmin, ymin, xmax, ymax; one image) one row at a time.

    ``where(index)`` names a row in messages (e.g. ``"ann.csv row 7"``). Good rows are kept with
    their boxes clipped; a bad row is dropped and its one-line reason added to ``errors``.
    """
    kept, boxes = [], []
    result = ValidatedRows(rows=rows.iloc[:0])
    for index, record in zip(rows.index, rows[list(_NAMES)].itertuples(index=False), strict=True):
        try:
            box, warning = validate_box(tuple(record), width, height, where(index))
        except InputError as exc:
            result.errors.append(str(exc))
            continue
        if warning:
            result.warnings.append(warning)
        kept.append(index)
        boxes.append(box)
    result.rows = rows.loc[kept].copy()
    if boxes:
        result.rows[list(_NAMES)] = boxes
    return result
