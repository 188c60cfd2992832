"""The internal annotation form every importer produces and every trainer reads.

An annotation table is a ``pandas.DataFrame`` with one row per box (or per "No finding"
image) and these columns:

==============  =======  ==========================================================
column          dtype    meaning
==============  =======  ==========================================================
image_id        str      image identifier; the file is resolved under an image folder
rad_id          str      reader who drew the box ("" when unknown)
lesion_type     str      label; ``NO_FINDING`` for an image without a lesion
xmin ymin       float    box corners in pixels of the original image; NaN for
xmax ymax                ``NO_FINDING`` rows
study_id        str      patient/study group used for splitting (defaults to image_id)
series_id       str      series identifier ("" when unknown)
==============  =======  ==========================================================
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spinedx.io.paths import existing_file, inside

NO_FINDING = "No finding"
BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]
ANNOTATION_COLUMNS = ["image_id", "rad_id", "lesion_type", *BOX_COLUMNS, "study_id", "series_id"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", "")


def empty_annotations() -> pd.DataFrame:
    """An annotation table with the right columns and no rows."""
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in ANNOTATION_COLUMNS})
    for column in BOX_COLUMNS:
        frame[column] = frame[column].astype(float)
    return frame


def boxed_rows(annotations: pd.DataFrame) -> pd.DataFrame:
    """Rows that carry a box (drops "No finding" rows)."""
    return annotations[annotations["lesion_type"] != NO_FINDING].dropna(subset=BOX_COLUMNS)


def resolve_image_path(images_dir: Path, image_id: str, where: str | None = None) -> Path | None:
    """The file for ``image_id`` under ``images_dir``, trying the usual suffixes; None if absent.

    Reads stay inside ``images_dir``: an absolute id, ``..`` steps out of it or a symlink pointing
    outside raise InputError naming ``where`` (e.g. the CSV row; default: the image folder).
    """
    images_dir = Path(images_dir)
    where = where or str(images_dir)
    for suffix in IMAGE_SUFFIXES:
        candidate = inside(images_dir, f"{image_id}{suffix}", where, what="image_id")
        if existing_file(candidate):
            return candidate
    return None
