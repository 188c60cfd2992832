"""Import the ``spider-sagittal`` layout: lumbar MR slices with per-disc boxes and grades.

The layout (see ``shared/data/README.md``)::

    root/
      images/{image_id}.png     mid-sagittal slices, cranial up, anterior left
      series.csv                image_id, patient, sequence, width, height
                                [, n_boxes, n_graded_discs, boxes_match_gradings]
      discs.csv                 image_id[, patient, sequence], ivd_label, level,
                                xmin, ymin, xmax, ymax, <grades>
      gradings.csv              patient, ivd_label, level, <grades>
      spacing.csv (optional)    image_id, row_mm, col_mm   (written by synthetic data)

``<grades>`` are :data:`GRADE_COLUMNS`; ``ivd_label`` counts discs upwards from 1 = L5/S1
(:data:`LEVEL_NAMES`). A label with no anatomical name (SPIDER has one ``ivd_label`` 0) must
be spelled ``IVD<label>``, as in the source data.

:func:`read_spider` returns a :class:`SpiderDataset` of typed tables. Identifiers
(``image_id``, ``patient``, ``sequence``, ``level``) are strings, counts, labels and grades
``int64``, box corners ``float64``; ``n_boxes`` is a nullable ``Int64`` (empty where the
source had no boxes). Each table's index holds the row number of the record in its file
(header = row 1, first data row = 2), ``attrs`` has ``source`` and ``unknown_columns``
(extra columns, left out of the table). Optional ``series.csv`` columns that are absent are
derived: ``n_boxes`` = rows in ``discs.csv`` (empty if none), ``n_graded_discs`` = rows in
``gradings.csv`` for the patient, ``boxes_match_gradings`` = 1 if the image has disc rows.
Optional ``patient``/``sequence`` columns of ``discs.csv`` are taken from ``series.csv``.

Checks (each failure raises :class:`~spinedx.errors.InputError` naming file, row and column):
missing files or columns, empty or non-numeric cells, duplicate keys, grades out of range,
``level`` not matching ``ivd_label``, discs on images that ``series.csv`` lacks or whose
patient/sequence disagree with it, boxes that are empty or outside the image, disc grades
that differ from ``gradings.csv`` (or a disc without a grading), and image files missing
from ``images/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.io.boxes import box_problems
from spinedx.io.csv_cells import ROW_INDEX_NAME, parse_finite_number, read_cells, read_header, shown_cell
from spinedx.io.levels import GRADE_COLUMNS, GRADE_RANGES, level_name
from spinedx.io.paths import inside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".mha", ".nii.gz", ".nii")
"""Suffixes tried, in order, for ``images/{image_id}``."""

SERIES_REQUIRED = ("image_id", "patient", "sequence", "width", "height")
SERIES_OPTIONAL = ("n_boxes", "n_graded_discs", "boxes_match_gradings")
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
DISCS_REQUIRED = ("image_id", "ivd_label", "level", *BOX_COLUMNS, *GRADE_COLUMNS)
DISCS_OPTIONAL = ("patient", "sequence")
GRADINGS_REQUIRED = ("patient", "ivd_label", "level", *GRADE_COLUMNS)
SPACING_COLUMNS = ("image_id", "row_mm", "col_mm")
DISCS_WRITTEN = ("image_id", "patient", "sequence", "ivd_label", "level", *BOX_COLUMNS, *GRADE_COLUMNS)
"""Columns of discs.csv as spinedx writes it (synthetic data, review exports)."""
GRADINGS_WRITTEN = GRADINGS_REQUIRED
_FIRST_DATA_ROW = 2


@dataclass
class SpiderDataset:
    """The tables of a spider-sagittal folder (see the module doc for columns and types)."""

    root: Path
    series: pd.DataFrame
    discs: pd.DataFrame
    gradings: pd.DataFrame
    spacing: pd.DataFrame = field(default_factory=lambda: _empty_spacing())
    """image_id, row_mm, col_mm from ``spacing.csv``; empty when the file is absent."""
    image_paths: dict[str, Path] = field(default_factory=dict, repr=False)

    def image_path(self, image_id: str) -> Path:
        """The image file of ``image_id`` (``images/{image_id}.png`` or another known suffix)."""
        key = str(image_id)
        if key in self.image_paths:
            return self.image_paths[key]
        if key in set(self.series["image_id"].tolist()):
            return self.root / "images" / f"{key}.png"
        raise InputError(f"{self.root / 'series.csv'}: no image_id '{key}'")

    def pixel_spacing(self, image_id: str) -> tuple[float, float] | None:
        """(row, col) mm of ``image_id`` from ``spacing.csv``; None when unknown."""
        rows = self.spacing[self.spacing["image_id"] == str(image_id)]
        if rows.empty:
            return None
        return (float(rows["row_mm"].iloc[0]), float(rows["col_mm"].iloc[0]))


def read_spider(root: str | Path) -> SpiderDataset:
    """Read and check a spider-sagittal folder (see the module doc)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    images = root / "images"
    if not images.is_dir():
        raise InputError(f"{images}: folder not found (expected the images of series.csv)")

    series_raw = _load_csv(root / "series.csv", SERIES_REQUIRED, SERIES_OPTIONAL)
    discs_raw = _load_csv(root / "discs.csv", DISCS_REQUIRED, DISCS_OPTIONAL, allow_empty=True)
    gradings_raw = _load_csv(root / "gradings.csv", GRADINGS_REQUIRED, (), allow_empty=True)

    series = _build_series(root / "series.csv", series_raw)
    gradings = _build_gradings(root / "gradings.csv", gradings_raw)
    discs = _build_discs(root / "discs.csv", discs_raw, series, gradings)
    series = _fill_series_counts(series, series_raw, discs, gradings)

    spacing_path = root / "spacing.csv"
    if spacing_path.exists():
        spacing_raw = _load_csv(spacing_path, SPACING_COLUMNS, (), allow_empty=True)
        spacing = _build_spacing(spacing_path, spacing_raw, series)
    else:
        spacing = _empty_spacing()

    paths = _find_images(images, series)
    return SpiderDataset(
        root=root, series=series, discs=discs, gradings=gradings, spacing=spacing, image_paths=paths
    )


# --------------------------------------------------------------------------- CSV reading


def _load_csv(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], *, allow_empty: bool = False
) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    header = read_header(path)
    names = [h.strip().lower() for h in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: column '{shown_cell(repeated[0])}' appears more than once in the header")
    raw = read_cells(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in required if c not in raw.columns]
    if len(missing) == 1:
        raise InputError(f"{path}: missing column '{missing[0]}'")
    if missing:
        raise InputError(f"{path}: missing columns " + ", ".join(f"'{c}'" for c in missing))
    known = set(required) | set(optional)
    raw.index = pd.RangeIndex(_FIRST_DATA_ROW, _FIRST_DATA_ROW + len(raw), name=ROW_INDEX_NAME)
    raw = raw.astype(str)
    raw = raw[(raw != "").any(axis=1)]
    if raw.empty and not allow_empty:
        raise InputError(f"{path}: no rows")
    for column in raw.columns:
        raw[column] = raw[column].str.strip()
    raw.attrs["unknown_columns"] = [h.strip() for h in header if h.strip().lower() not in known]
    return raw


def _text(path: Path, raw: pd.DataFrame, column: str) -> list[str]:
    values = raw[column].tolist()
    for row, value in zip(raw.index, values, strict=True):
        if value == "":
            raise InputError(f"{path} row {row} column '{column}': empty")
    return values


def _number(path: Path, row: int, column: str, cell: str) -> float:
    if cell == "":
        raise InputError(f"{path} row {row} column '{column}': empty")
    return parse_finite_number(path, row, column, cell)


def _integer(path: Path, row: int, column: str, cell: str) -> int:
    value = _number(path, row, column, cell)
    if value != int(value):
        raise InputError(f"{path} row {row} column '{column}': '{shown_cell(cell)}' is not a whole number")
    return int(value)


def _integers(path: Path, raw: pd.DataFrame, column: str, low: int | None = None, high=None) -> np.ndarray:
    out = np.empty(len(raw), dtype=np.int64)
    for i, (row, cell) in enumerate(zip(raw.index, raw[column].tolist(), strict=True)):
        value = _integer(path, row, column, cell)
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                allowed = f">= {low}"
            elif low is None:
                allowed = f"<= {high}"
            else:
                allowed = f"{low}..{high}"
            raise InputError(
                f"{path} row {row} column '{column}': {value} is out of range (allowed {allowed})"
            )
        out[i] = value
    return out


def _grades(path: Path, raw: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: _integers(path, raw, c, *GRADE_RANGES[c]) for c in GRADE_COLUMNS}


def _check_levels(path: Path, raw: pd.DataFrame, labels: np.ndarray, levels: list[str]) -> None:
    for row, label, level in zip(raw.index, labels, levels, strict=True):
        expected = level_name(label)
        if level.upper() != expected.upper():
            raise InputError(
                f"{path} row {row} column 'level': '{shown_cell(level)}' does not match ivd_label {label} "
                f"(expected '{expected}')"
            )


def _check_unique(path: Path, frame: pd.DataFrame, keys: list[str]) -> None:
    duplicated = frame.duplicated(keys, keep="first")
    if duplicated.any():
        row = frame.index[duplicated.to_numpy().argmax()]
        first = frame.index[(frame[keys] == frame.loc[row, keys]).all(axis=1).to_numpy().argmax()]
        key = ", ".join(f"{k}={frame.loc[row, k]}" for k in keys)
        raise InputError(f"{path} row {row}: duplicate of row {first} ({key})")


def _finish(frame: pd.DataFrame, path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    frame.index = pd.Index(raw.index, name=ROW_INDEX_NAME)
    frame.attrs["source"] = str(path)
    frame.attrs["unknown_columns"] = list(raw.attrs.get("unknown_columns", []))
    return frame


# --------------------------------------------------------------------------- tables


def _build_series(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "image_id": _text(path, raw, "image_id"),
            "patient": _text(path, raw, "patient"),
            "sequence": _text(path, raw, "sequence"),
            "width": _integers(path, raw, "width", 1),
            "height": _integers(path, raw, "height", 1),
        }
    )
    frame = _finish(frame, path, raw)
    for column in ("image_id", "patient", "sequence"):
        frame[column] = frame[column].astype("str")
    if "n_boxes" in raw.columns:
        counts = []
        for row, cell in zip(raw.index, raw["n_boxes"].tolist(), strict=True):
            counts.append(pd.NA if cell == "" else _integer(path, row, "n_boxes", cell))
            if counts[-1] is not pd.NA and counts[-1] < 0:
                raise InputError(f"{path} row {row} column 'n_boxes': {counts[-1]} is negative")
        frame["n_boxes"] = pd.array(counts, dtype="Int64")
    if "n_graded_discs" in raw.columns:
        frame["n_graded_discs"] = _integers(path, raw, "n_graded_discs", 0)
    if "boxes_match_gradings" in raw.columns:
        frame["boxes_match_gradings"] = _integers(path, raw, "boxes_match_gradings", 0, 1)
    _check_unique(path, frame, ["image_id"])
    return frame


def _build_gradings(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    labels = _integers(path, raw, "ivd_label", 0)
    levels = _text(path, raw, "level")
    _check_levels(path, raw, labels, levels)
    frame = pd.DataFrame(
        {
            "patient": _text(path, raw, "patient"),
            "ivd_label": labels,
            "level": [level_name(label) for label in labels],
            **_grades(path, raw),
        }
    )
    frame = _finish(frame, path, raw)
    for column in ("patient", "level"):
        frame[column] = frame[column].astype("str")
    _check_unique(path, frame, ["patient", "ivd_label"])
    return frame


def _build_discs(path: Path, raw: pd.DataFrame, series: pd.DataFrame, gradings: pd.DataFrame) -> pd.DataFrame:
    image_ids = _text(path, raw, "image_id")
    labels = _integers(path, raw, "ivd_label", 0)
    levels = _text(path, raw, "level")
    _check_levels(path, raw, labels, levels)

    by_image = {image_id: i for i, image_id in enumerate(series["image_id"].tolist())}
    series_rows = series.index.tolist()
    patients: list[str] = []
    sequences: list[str] = []
    for row, image_id in zip(raw.index, image_ids, strict=True):
        if image_id not in by_image:
            raise InputError(
                f"{path} row {row} column 'image_id': '{shown_cell(image_id)}' is not in {path.parent / 'series.csv'}"
            )
        where = by_image[image_id]
        for column, out in (("patient", patients), ("sequence", sequences)):
            expected = str(series[column].iloc[where])
            if column in raw.columns:
                given = raw.at[row, column]
                if given == "":
                    raise InputError(f"{path} row {row} column '{column}': empty")
                if given != expected:
                    raise InputError(
                        f"{path} row {row} column '{column}': '{shown_cell(given)}' differs from '{expected}' "
                        f"in {path.parent / 'series.csv'} row {series_rows[where]} for image '{image_id}'"
                    )
            out.append(expected)

    boxes = {column: np.empty(len(raw), dtype=np.float64) for column in BOX_COLUMNS}
    for i, row in enumerate(raw.index):
        for column in BOX_COLUMNS:
            boxes[column][i] = _number(path, row, column, raw.at[row, column])
        where = by_image[image_ids[i]]
        width = int(series["width"].iloc[where])
        height = int(series["height"].iloc[where])
        x0, y0, x1, y1 = (boxes[c][i] for c in BOX_COLUMNS)
        # Reference boxes are not clipped: a box past series.csv's size means the tables disagree.
        problems = box_problems((x0, y0, x1, y1), width, height)
        if problems.degenerate:
            raise InputError(
                f"{path} row {row}: empty box (xmin {x0:g}, ymin {y0:g}, xmax {x1:g}, ymax {y1:g})"
            )
        if problems.outside:
            raise InputError(
                f"{path} row {row}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                f"{width}x{height} image '{image_ids[i]}'"
            )

    grades = _grades(path, raw)
    frame = pd.DataFrame(
        {
            "image_id": image_ids,
            "patient": patients,
            "sequence": sequences,
            "ivd_label": labels,
            "level": [level_name(label) for label in labels],
            **boxes,
            **grades,
        }
    )
    frame = _finish(frame, path, raw)
    for column in ("image_id", "patient", "sequence", "level"):
        frame[column] = frame[column].astype("str")
    _check_unique(path, frame, ["image_id", "ivd_label"])
    _check_against_gradings(path, frame, gradings)
    return frame


def _check_against_gradings(path: Path, discs: pd.DataFrame, gradings: pd.DataFrame) -> None:
    source = gradings.attrs.get("source", "gradings.csv")
    lookup = {
        (p, int(label)): i
        for i, (p, label) in enumerate(zip(gradings["patient"], gradings["ivd_label"], strict=True))
    }
    grade_values = {c: gradings[c].to_numpy() for c in GRADE_COLUMNS}
    grading_rows = gradings.index.tolist()
    for row, patient, label, *values in zip(
        discs.index,
        discs["patient"],
        discs["ivd_label"],
        *(discs[c] for c in GRADE_COLUMNS),
        strict=True,
    ):
        where = lookup.get((patient, int(label)))
        if where is None:
            raise InputError(
                f"{path} row {row}: patient '{patient}' disc {int(label)} ({level_name(label)}) "
                f"has no row in {source}"
            )
        for column, value in zip(GRADE_COLUMNS, values, strict=True):
            expected = int(grade_values[column][where])
            if int(value) != expected:
                raise InputError(
                    f"{path} row {row} column '{column}': {int(value)} differs from {expected} "
                    f"in {source} row {grading_rows[where]}"
                )


def _fill_series_counts(
    series: pd.DataFrame, raw: pd.DataFrame, discs: pd.DataFrame, gradings: pd.DataFrame
) -> pd.DataFrame:
    boxes_per_image = discs.groupby("image_id").size() if len(discs) else pd.Series(dtype=np.int64)
    if "n_boxes" not in raw.columns:
        counts = series["image_id"].map(boxes_per_image)
        series["n_boxes"] = pd.array(
            [pd.NA if pd.isna(v) else int(v) for v in counts.tolist()], dtype="Int64"
        )
    if "n_graded_discs" not in raw.columns:
        per_patient = gradings.groupby("patient").size() if len(gradings) else pd.Series(dtype=np.int64)
        series["n_graded_discs"] = series["patient"].map(per_patient).fillna(0).astype(np.int64)
    if "boxes_match_gradings" not in raw.columns:
        series["boxes_match_gradings"] = series["image_id"].isin(boxes_per_image.index).astype(np.int64)
    out = series[[*SERIES_REQUIRED, *SERIES_OPTIONAL]].copy()
    out.attrs = dict(series.attrs)
    return out


def _build_spacing(path: Path, raw: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    image_ids = _text(path, raw, "image_id")
    known = set(series["image_id"].tolist())
    values = {c: np.empty(len(raw), dtype=np.float64) for c in ("row_mm", "col_mm")}
    for i, (row, image_id) in enumerate(zip(raw.index, image_ids, strict=True)):
        if image_id not in known:
            raise InputError(
                f"{path} row {row} column 'image_id': '{shown_cell(image_id)}' is not in {path.parent / 'series.csv'}"
            )
        for column in ("row_mm", "col_mm"):
            value = _number(path, row, column, raw.at[row, column])
            if value <= 0:
                raise InputError(f"{path} row {row} column '{column}': {value:g} is not a positive spacing")
            values[column][i] = value
    frame = _finish(pd.DataFrame({"image_id": image_ids, **values}), path, raw)
    frame["image_id"] = frame["image_id"].astype("str")
    _check_unique(path, frame, ["image_id"])
    return frame


def _empty_spacing() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "image_id": pd.Series(dtype="str"),
            "row_mm": pd.Series(dtype=np.float64),
            "col_mm": pd.Series(dtype=np.float64),
        }
    )
    frame.index.name = ROW_INDEX_NAME
    frame.attrs["source"] = None
    frame.attrs["unknown_columns"] = []
    return frame


def _find_images(images: Path, series: pd.DataFrame) -> dict[str, Path]:
    present = {p.name: p for p in images.iterdir()} if images.is_dir() else {}
    paths: dict[str, Path] = {}
    missing: list[tuple[int, str]] = []
    for row, image_id in zip(series.index, series["image_id"].tolist(), strict=True):
        for suffix in IMAGE_SUFFIXES:
            candidate = present.get(f"{image_id}{suffix}")
            if candidate is not None and candidate.is_file():
                # A symlink in images/ may not lead the reader out of the dataset folder.
                where = f"{images.parent / 'series.csv'} row {row}"
                paths[image_id] = inside(images, candidate.name, where, what="image file")
                break
        else:
            missing.append((row, image_id))
    if missing:
        row, image_id = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            f"{images}: no image file for '{image_id}' ({images.parent / 'series.csv'} row {row}; "
            f"looked for {image_id}.png and other known suffixes){more}"
        )
    return paths
