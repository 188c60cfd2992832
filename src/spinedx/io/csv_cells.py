"""Reading CSV files cell by cell, so every error can name the file, row and column at fault.

Row numbers are those an editor shows: header = row 1, first data row = 2, blank lines counted.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pandas as pd

from spinedx.errors import InputError

ROW_INDEX_NAME = "csv_row"
SHOWN_CELL_CHARACTERS = 40
"""Longest cell text quoted in a message; longer cells are cut (a message stays one short line)."""


def shown_cell(cell: str) -> str:
    """``cell`` as a message quotes it: control characters escaped, at most SHOWN_CELL_CHARACTERS."""
    text = cell if cell.isprintable() else cell.encode("unicode_escape").decode("ascii")
    if len(text) > SHOWN_CELL_CHARACTERS:
        text = text[: SHOWN_CELL_CHARACTERS - 3] + "..."
    return text


def read_header(path: Path) -> list[str]:
    """The header fields of a CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: cannot parse CSV: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except csv.Error as exc:
        raise InputError(f"{path}: cannot parse CSV: {exc}") from None


def read_cells(path: Path) -> pd.DataFrame:
    """Every cell as a string, as written; blank lines kept so row numbers match the file."""
    try:
        with warnings.catch_warnings():
            # With index_col=False pandas only warns when rows are longer than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                index_col=False,
                encoding="utf-8-sig",
            )
    except pd.errors.ParserWarning:
        raise InputError(f"{path}: cannot parse CSV: data rows have more fields than the header") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: no rows (the file is empty)") from None
    except pd.errors.ParserError as exc:
        message = " ".join(str(exc).split())
        raise InputError(f"{path}: cannot parse CSV: {message}") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: cannot parse CSV: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def parse_finite_number(path: Path, row: int, column: str, cell: str) -> float:
    """A CSV cell as a finite float, or an InputError naming the file, row and column."""
    try:
        value = float(cell)
    except ValueError:
        raise InputError(
            f"{path} row {row} column '{column}': '{shown_cell(cell)}' is not a number"
        ) from None
    if not math.isfinite(value):
        raise InputError(f"{path} row {row} column '{column}': '{shown_cell(cell)}' is not a finite number")
    return value
