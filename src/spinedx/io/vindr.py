"""Import VinDr-style annotation CSVs (VinDr-SpineXR, VinDr-CXR) into the internal table.

A VinDr CSV has one row per box drawn by one reader::

    image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax[,study_id,series_id]
    0a1b...,R2,Osteophytes,512.3,1020.0,600.1,1100.5
    0c9d...,R1,No finding,,,,

:func:`read_vindr_csv` returns the table described in :mod:`spinedx.io.annotations`
(columns ``ANNOTATION_COLUMNS``, in that order). Its index holds the row number of each
record in the file (header = row 1, first data row = 2) so that later checks can point
at the line at fault; ``frame.attrs`` carries ``source`` (the CSV path) and
``unknown_columns`` (extra columns that were left out of the table).

Rules:

* A row whose four box cells are empty, or whose ``lesion_type`` is "No finding", becomes a
  ``NO_FINDING`` row with NaN boxes (an empty ``lesion_type`` is allowed only on such rows).
* A lesion row must have all four coordinates; a partial box or a lesion without a box is an
  error, so that an annotated image is never silently turned into a negative one.
* ``study_id`` defaults to ``image_id``; ``rad_id`` and ``series_id`` to "".
* Column names are matched without regard to case or surrounding spaces.

Every problem raises :class:`~spinedx.errors.InputError` naming the file, row and column.
Checks that need the images (boxes against image size, missing files) are in
:mod:`spinedx.data.check`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS, BOX_COLUMNS, NO_FINDING
from spinedx.io.csv_cells import ROW_INDEX_NAME, parse_finite_number, read_cells, read_header, shown_cell

REQUIRED_COLUMNS = ("image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax")
OPTIONAL_COLUMNS = ("rad_id", "study_id", "series_id")
_FIRST_DATA_ROW = 2
_NO_FINDING_SPELLINGS = {"no finding", "no_finding"}


def read_vindr_csv(path: str | Path) -> pd.DataFrame:
    """Read a VinDr annotation CSV into the internal annotation table (see module doc)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")

    header = read_header(path)
    raw = read_cells(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]

    # pandas renames a repeated header "xmin" to "xmin.1"; the csv module sees the real header.
    names = [h.strip().lower() for h in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: column '{shown_cell(repeated[0])}' appears more than once in the header")

    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if len(missing) == 1:
        raise InputError(f"{path}: missing column '{missing[0]}'")
    if missing:
        raise InputError(f"{path}: missing columns " + ", ".join(f"'{c}'" for c in missing))
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [h.strip() for h in header if h.strip().lower() not in known]

    # File row numbers: header is row 1. Blank lines are kept by the reader (as empty rows)
    # so the numbering stays true to the file, then dropped here.
    raw.index = pd.RangeIndex(_FIRST_DATA_ROW, _FIRST_DATA_ROW + len(raw), name=ROW_INDEX_NAME)
    raw = raw[(raw != "").any(axis=1)]
    if raw.empty:
        raise InputError(f"{path}: no rows")

    table = _build_table(path, raw)
    table.attrs["source"] = str(path)
    table.attrs["unknown_columns"] = unknown
    return table


def _text_column(raw: pd.DataFrame, column: str) -> pd.Series:
    if column not in raw.columns:
        return pd.Series("", index=raw.index, dtype=object)
    return raw[column].astype(str).str.strip()


def _parse_coordinate(path: Path, row: int, column: str, cell: str) -> float:
    if cell == "" or cell.lower() == "nan":
        return math.nan
    return parse_finite_number(path, row, column, cell)


def _build_table(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    image_id = _text_column(raw, "image_id")
    lesion = _text_column(raw, "lesion_type")
    rad_id = _text_column(raw, "rad_id")
    study_id = _text_column(raw, "study_id")
    series_id = _text_column(raw, "series_id")

    boxes = {column: np.empty(len(raw), dtype=np.float64) for column in BOX_COLUMNS}
    cells = {column: _text_column(raw, column).tolist() for column in BOX_COLUMNS}
    rows = raw.index.tolist()
    images = image_id.tolist()
    lesions = lesion.tolist()

    for i, row in enumerate(rows):
        if images[i] == "":
            raise InputError(f"{path} row {row} column 'image_id': empty")
        if not images[i].isprintable():  # a file name with a line break or NUL is never meant
            raise InputError(
                f"{path} row {row} column 'image_id': '{shown_cell(images[i])}' contains control characters"
            )
        values = [_parse_coordinate(path, row, c, cells[c][i]) for c in BOX_COLUMNS]
        present = [not math.isnan(v) for v in values]
        no_finding = lesions[i].lower() in _NO_FINDING_SPELLINGS
        if no_finding or not any(present):
            if lesions[i] != "" and not no_finding:
                raise InputError(
                    f"{path} row {row}: lesion '{shown_cell(lesions[i])}' has no box (xmin, ymin, xmax, ymax are empty)"
                )
            lesions[i] = NO_FINDING
            values = [math.nan] * 4
        elif not all(present):
            empty = ", ".join(f"'{c}'" for c, p in zip(BOX_COLUMNS, present, strict=True) if not p)
            raise InputError(f"{path} row {row}: incomplete box (column {empty} empty)")
        elif lesions[i] == "":
            raise InputError(f"{path} row {row} column 'lesion_type': empty for a row with a box")
        for column, value in zip(BOX_COLUMNS, values, strict=True):
            boxes[column][i] = value

    table = pd.DataFrame(
        {
            "image_id": images,
            "rad_id": rad_id.tolist(),
            "lesion_type": lesions,
            **boxes,
            "study_id": study_id.where(study_id != "", image_id).tolist(),
            "series_id": series_id.tolist(),
        },
        index=raw.index,
        columns=ANNOTATION_COLUMNS,
    )
    for column in ANNOTATION_COLUMNS:
        if column not in BOX_COLUMNS:
            table[column] = table[column].astype(object)
    return table
