"""Import the ``lumbar515-sagittal`` layout: a second lumbar MR cohort with disc and lesion boxes.

The layout (see ``shared/data/README.md``)::

    root/
      images/{image_id}.png   mid-sagittal slices, cranial up, anterior left
      series.csv              image_id, patient, sequence, width, height[, n_boxes, source_file]
      boxes.csv               image_id, patient, sequence, label, xmin, ymin, xmax, ymax, level
      pfirrmann.csv           patient, level, pfirrmann     (L3/L4, L4/L5, L5/S1 only)

Box labels: ``normal``, ``ddd`` (degenerated disc), ``lumbar_bulge``, ``thoracic_bulge`` are disc
boxes (tight around the disc, without the endplates, unlike SPIDER's); ``stenosis`` is a small box
at the canal behind a disc; ``spondylolisthesis`` boxes the slipped segment. ``level`` of a disc box
was derived by counting up from the lowest boxed disc, so it can be off where that disc was not boxed,
and is empty for a few boxes (their ``ivd_label`` is NA).

:func:`read_lumbar515` returns a :class:`Lumbar515Dataset` whose ``discs`` table is the internal
per-disc form shared with SPIDER's importer: one row per disc box with ``image_id``, ``patient``,
``sequence``, ``ivd_label``, ``level``, the box, and the grades this cohort has — ``bulging``
(lumbar or thoracic bulge vs normal; a ``ddd`` disc is not labelled for bulging: its box names one
label only), ``degenerated`` (``ddd`` vs normal), ``stenosis`` (a stenosis box sits behind the disc:
the disc whose vertical centre is nearest the stenosis box centre, within one disc height),
``spondylolisthesis`` (the disc's centre lies inside a spondylolisthesis box) and ``pfirrmann``
(from pfirrmann.csv by patient and level). A grade the cohort does not label for a disc is missing
(pandas NA), never 0. Checks raise :class:`~spinedx.errors.InputError` naming file, row and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.io.boxes import box_problems, format_box
from spinedx.io.csv_cells import parse_finite_number, read_cells, read_header, shown_cell
from spinedx.io.levels import LEVEL_NAMES
from spinedx.io.paths import inside

DISC_LABELS = ("normal", "ddd", "lumbar_bulge", "thoracic_bulge")
LESION_LABELS = ("stenosis", "spondylolisthesis")
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
SERIES_REQUIRED = ("image_id", "patient", "sequence", "width", "height")
BOXES_REQUIRED = ("image_id", "label", *BOX_COLUMNS, "level")
PFIRRMANN_REQUIRED = ("patient", "level", "pfirrmann")
COHORT_GRADES = ("bulging", "degenerated", "stenosis", "spondylolisthesis", "pfirrmann")
"""Per-disc grades this cohort labels (nullable Int64 columns of ``discs``)."""
STENOSIS_REACH = 1.0
"""A stenosis box belongs to the disc nearest it vertically when within this many disc heights."""
_LABEL_OF_LEVEL = {name: label for label, name in LEVEL_NAMES.items()}


@dataclass
class Lumbar515Dataset:
    root: Path
    series: pd.DataFrame
    """image_id, patient, sequence, width, height."""
    discs: pd.DataFrame
    """One row per disc box: image_id, patient, sequence, label, ivd_label, level, box, grades."""
    lesions: pd.DataFrame
    """Stenosis and spondylolisthesis boxes: image_id, patient, label, box."""
    pfirrmann: pd.DataFrame
    """patient, level, pfirrmann."""

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.png"


def is_lumbar515(root: str | Path) -> bool:
    """Whether ``root`` is laid out as lumbar515-sagittal (boxes.csv, not SPIDER's discs.csv)."""
    root = Path(root)
    return (root / "boxes.csv").is_file() and not (root / "discs.csv").is_file()


def read_lumbar515(root: str | Path) -> Lumbar515Dataset:
    root = Path(root)
    series = _read_series(root / "series.csv")
    boxes = _read_boxes(root / "boxes.csv", series)
    pfirrmann = _read_pfirrmann(root / "pfirrmann.csv", set(series["patient"]))
    missing = [
        image_id for image_id in series["image_id"] if not (root / "images" / f"{image_id}.png").is_file()
    ]
    if missing:
        raise InputError(
            f"{root / 'images'}: {len(missing)} image(s) of series.csv missing, e.g. '{shown_cell(missing[0])}.png'"
        )
    discs = boxes[boxes["label"].isin(DISC_LABELS)].copy()
    lesions = boxes[boxes["label"].isin(LESION_LABELS)].drop(columns=["level"]).copy()
    discs = _with_grades(discs, lesions, pfirrmann)
    return Lumbar515Dataset(root, series, discs, lesions, pfirrmann)


def _require(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    missing = [column for column in required if column not in read_header(path)]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    cells = read_cells(path)
    cells.index = cells.index + 2  # editor row numbers: header = 1
    return cells


def _read_series(path: Path) -> pd.DataFrame:
    cells = _require(path, SERIES_REQUIRED)
    rows = []
    for row, record in cells.iterrows():
        image_id = record["image_id"].strip()
        inside(path.parent / "images", f"{image_id}.png", f"{path} row {row} column 'image_id'")
        size = [int(parse_finite_number(path, row, column, record[column])) for column in ("width", "height")]
        if min(size) < 1:
            raise InputError(f"{path} row {row}: width and height must be positive")
        rows.append((image_id, record["patient"].strip(), record["sequence"].strip(), *size))
    series = pd.DataFrame(rows, columns=list(SERIES_REQUIRED), index=cells.index)
    duplicated = series["image_id"].duplicated()
    if duplicated.any():
        row = series.index[duplicated.argmax()]
        raise InputError(f"{path} row {row} column 'image_id': duplicate '{series.loc[row, 'image_id']}'")
    return series


def _read_boxes(path: Path, series: pd.DataFrame) -> pd.DataFrame:
    cells = _require(path, BOXES_REQUIRED)
    known = series.set_index("image_id")
    rows = []
    for row, record in cells.iterrows():
        image_id, label, level = record["image_id"].strip(), record["label"].strip(), record["level"].strip()
        if image_id not in known.index:
            raise InputError(
                f"{path} row {row} column 'image_id': '{shown_cell(image_id)}' is not in series.csv"
            )
        if label not in DISC_LABELS + LESION_LABELS:
            raise InputError(
                f"{path} row {row} column 'label': '{shown_cell(label)}' is not one of "
                f"{', '.join(DISC_LABELS + LESION_LABELS)}"
            )
        box = [parse_finite_number(path, row, column, record[column]) for column in BOX_COLUMNS]
        width, height = (int(known.loc[image_id, key]) for key in ("width", "height"))
        problems = box_problems(box, width, height)
        if problems.degenerate or problems.fully_outside:
            reason = "; ".join(problems.degenerate) or "it lies outside the image"
            raise InputError(f"{path} row {row}: box {format_box(box)} is unusable: {reason}")
        box = [
            min(max(value, 0.0), limit)
            for value, limit in zip(box, (width, height, width, height), strict=True)
        ]
        ivd_label = _LABEL_OF_LEVEL.get(level, pd.NA)
        if level and label in DISC_LABELS and ivd_label is pd.NA:
            raise InputError(f"{path} row {row} column 'level': '{shown_cell(level)}' is not a disc level")
        patient, sequence = known.loc[image_id, "patient"], known.loc[image_id, "sequence"]
        rows.append((image_id, patient, sequence, label, ivd_label, level, *box))
    columns = ["image_id", "patient", "sequence", "label", "ivd_label", "level", *BOX_COLUMNS]
    boxes = pd.DataFrame(rows, columns=columns, index=cells.index)
    boxes["ivd_label"] = boxes["ivd_label"].astype("Int64")
    return boxes


def _read_pfirrmann(path: Path, patients: set[str]) -> pd.DataFrame:
    cells = _require(path, PFIRRMANN_REQUIRED)
    rows = []
    for row, record in cells.iterrows():
        patient, level = record["patient"].strip(), record["level"].strip()
        if level not in _LABEL_OF_LEVEL:
            raise InputError(f"{path} row {row} column 'level': '{shown_cell(level)}' is not a disc level")
        grade = parse_finite_number(path, row, "pfirrmann", record["pfirrmann"])
        if grade not in (1, 2, 3, 4, 5):
            raise InputError(f"{path} row {row} column 'pfirrmann': {grade:g} is not a grade 1-5")
        rows.append((patient, level, int(grade)))
    table = pd.DataFrame(rows, columns=list(PFIRRMANN_REQUIRED), index=cells.index)
    duplicated = table.duplicated(["patient", "level"])
    if duplicated.any():
        row = table.index[duplicated.argmax()]
        raise InputError(
            f"{path} row {row}: a second grade for patient {table.loc[row, 'patient']} at this level"
        )
    return table[table["patient"].isin(patients)]


def _with_grades(discs: pd.DataFrame, lesions: pd.DataFrame, pfirrmann: pd.DataFrame) -> pd.DataFrame:
    label = discs["label"]
    discs["bulging"] = pd.array(
        np.where(label == "ddd", pd.NA, label.isin(["lumbar_bulge", "thoracic_bulge"]).astype(int)),
        dtype="Int64",
    )
    discs["degenerated"] = pd.array(
        np.where(label.isin(["ddd", "normal"]), (label == "ddd").astype(int), pd.NA), dtype="Int64"
    )
    discs["stenosis"] = pd.array(
        _stenosis_flags(discs, lesions[lesions["label"] == "stenosis"]), dtype="Int64"
    )
    discs["spondylolisthesis"] = pd.array(
        _centre_inside(discs, lesions[lesions["label"] == "spondylolisthesis"]), dtype="Int64"
    )
    grades = pfirrmann.set_index(["patient", "level"])["pfirrmann"]
    keys = list(zip(discs["patient"], discs["level"], strict=True))
    discs["pfirrmann"] = pd.array([grades.get(key, pd.NA) for key in keys], dtype="Int64")
    return discs


def _stenosis_flags(discs: pd.DataFrame, stenoses: pd.DataFrame) -> np.ndarray:
    """1 where a stenosis box of the same image belongs to the disc (see :data:`STENOSIS_REACH`)."""
    flags = pd.Series(0, index=discs.index)
    centre_y = (discs["ymin"] + discs["ymax"]) / 2
    heights = discs["ymax"] - discs["ymin"]
    for _, stenosis in stenoses.iterrows():
        same_image = discs["image_id"] == stenosis["image_id"]
        if not same_image.any():
            continue
        distance = (centre_y[same_image] - (stenosis["ymin"] + stenosis["ymax"]) / 2).abs()
        nearest = distance.idxmin()
        if distance[nearest] <= STENOSIS_REACH * heights[nearest]:
            flags[nearest] = 1
    return flags.to_numpy()


def _centre_inside(discs: pd.DataFrame, regions: pd.DataFrame) -> np.ndarray:
    flags = np.zeros(len(discs), dtype=int)
    image_ids = discs["image_id"].to_numpy()
    for _, region in regions.iterrows():
        box = tuple(region[column] for column in BOX_COLUMNS)
        flags |= (image_ids == region["image_id"]) & centres_inside(discs, box)
    return flags


def centres_inside(discs: pd.DataFrame, box) -> np.ndarray:
    """Which rows of ``discs`` (box columns) have their box centre inside ``box`` (xmin, ymin, xmax, ymax):
    how a detected box is matched to this cohort's tight reference disc boxes."""
    xmin, ymin, xmax, ymax = box
    centre_x = ((discs["xmin"] + discs["xmax"]) / 2).to_numpy()
    centre_y = ((discs["ymin"] + discs["ymax"]) / 2).to_numpy()
    return (centre_x >= xmin) & (centre_x <= xmax) & (centre_y >= ymin) & (centre_y <= ymax)
