"""Check a VinDr-style annotation CSV against its image folder before training on it.

:func:`check_dataset` reads the CSV (structural problems such as a missing column or a
non-numeric coordinate raise :class:`~spinedx.errors.InputError`, as everywhere), then reads
every referenced image once and collects, without stopping on any single bad item:

* image ids whose file is missing or cannot be decoded (a pixel budget applies: see
  :mod:`spinedx.io.limits`),
* image ids that would be read from outside the image folder (absolute, ``..``, symlinks out),
* degenerate boxes (``xmax <= xmin`` or ``ymax <= ymin``),
* boxes outside the image (a negative coordinate, ``xmax > width``, ``ymax > height``;
  a box may touch the far edge: ``xmax == width`` is fine; one entirely outside says so);
  box rules live in :mod:`spinedx.io.boxes`,
* duplicate rows (same values in every annotation column; the later copies are listed),
* columns the importer does not know (a warning, not an error).

Row numbers are those of the CSV file: header = row 1, first data row = row 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS, NO_FINDING, resolve_image_path
from spinedx.io.boxes import box_problems
from spinedx.io.csv_cells import ROW_INDEX_NAME
from spinedx.io.images import read_image
from spinedx.io.vindr import read_vindr_csv

RowIssue = tuple[int, str, str]
"""(CSV row, image_id, reason)."""

_TEXT_LIST_LIMIT = 20


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found. ``ok`` is True when no error was found."""

    csv_path: Path
    images_dir: Path
    n_rows: int = 0
    n_boxes: int = 0
    n_images_listed: int = 0
    n_images_found: int = 0
    n_images_readable: int = 0
    counts_per_lesion: dict[str, int] = field(default_factory=dict)
    counts_per_reader: dict[str, int] = field(default_factory=dict)
    images_per_lesion: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """image_id -> (height, width) of every image that could be read."""
    missing_files: list[str] = field(default_factory=list)
    unreadable_files: list[tuple[str, str]] = field(default_factory=list)
    refused_paths: list[tuple[str, str]] = field(default_factory=list)
    """(image_id, reason) for ids that would be read from outside the image folder."""
    degenerate_boxes: list[RowIssue] = field(default_factory=list)
    out_of_image_boxes: list[RowIssue] = field(default_factory=list)
    duplicate_rows: list[int] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        return (
            len(self.missing_files)
            + len(self.unreadable_files)
            + len(self.refused_paths)
            + len(self.degenerate_boxes)
            + len(self.out_of_image_boxes)
            + len(self.duplicate_rows)
        )

    def ok(self) -> bool:
        """True when no error was found (unknown columns and warnings do not count)."""
        return self.n_errors == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the whole report."""
        return {
            "csv_path": str(self.csv_path),
            "images_dir": str(self.images_dir),
            "ok": self.ok(),
            "n_errors": self.n_errors,
            "n_rows": self.n_rows,
            "n_boxes": self.n_boxes,
            "n_images_listed": self.n_images_listed,
            "n_images_found": self.n_images_found,
            "n_images_readable": self.n_images_readable,
            "counts_per_lesion": dict(self.counts_per_lesion),
            "counts_per_reader": dict(self.counts_per_reader),
            "images_per_lesion": dict(self.images_per_lesion),
            "missing_files": list(self.missing_files),
            "unreadable_files": [{"image_id": i, "reason": r} for i, r in self.unreadable_files],
            "refused_paths": [{"image_id": i, "reason": r} for i, r in self.refused_paths],
            "degenerate_boxes": [_issue_dict(issue) for issue in self.degenerate_boxes],
            "out_of_image_boxes": [_issue_dict(issue) for issue in self.out_of_image_boxes],
            "duplicate_rows": list(self.duplicate_rows),
            "unknown_columns": list(self.unknown_columns),
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        """A readable multi-line report."""
        status = "OK" if self.ok() else f"{self.n_errors} problem(s) found"
        lines = [
            f"Dataset check: {status}",
            f"  annotations: {self.csv_path}",
            f"  images:      {self.images_dir}",
            f"  rows: {self.n_rows} ({self.n_boxes} boxes)",
            f"  images listed: {self.n_images_listed}, found: {self.n_images_found}, "
            f"readable: {self.n_images_readable}",
        ]
        if self.counts_per_lesion:
            lines.append("  rows per lesion type (images):")
            width = max(len(name) for name in self.counts_per_lesion)
            for name, count in self.counts_per_lesion.items():
                images = self.images_per_lesion.get(name, 0)
                lines.append(f"    {name:<{width}}  {count:>6}  ({images} images)")
        if self.counts_per_reader:
            readers = ", ".join(
                f"{name or '(none)'}: {count}" for name, count in self.counts_per_reader.items()
            )
            lines.append(f"  rows per reader: {readers}")
        _section(lines, "missing image files", self.missing_files, lambda i: i)
        _section(lines, "unreadable images", self.unreadable_files, lambda item: f"{item[0]}: {item[1]}")
        _section(lines, "image ids outside the image folder", self.refused_paths, lambda item: item[1])
        _section(lines, "degenerate boxes", self.degenerate_boxes, _issue_text)
        _section(lines, "boxes outside the image", self.out_of_image_boxes, _issue_text)
        _section(lines, "duplicate rows", self.duplicate_rows, lambda row: f"row {row}")
        if self.unknown_columns:
            names = ", ".join(f"'{c}'" for c in self.unknown_columns)
            lines.append(f"  warning: unknown columns ignored: {names}")
        lines.extend(f"  warning: {text}" for text in self.warnings)
        return "\n".join(lines)


def _issue_dict(issue: RowIssue) -> dict[str, Any]:
    row, image_id, reason = issue
    return {"row": row, "image_id": image_id, "reason": reason}


def _issue_text(issue: RowIssue) -> str:
    row, image_id, reason = issue
    return f"row {row} ({image_id}): {reason}"


def _section(lines: list[str], title: str, items: list, render) -> None:
    if not items:
        return
    lines.append(f"  {title}: {len(items)}")
    lines.extend(f"    {render(item)}" for item in items[:_TEXT_LIST_LIMIT])
    if len(items) > _TEXT_LIST_LIMIT:
        lines.append(f"    ... and {len(items) - _TEXT_LIST_LIMIT} more")


def check_dataset(csv_path: str | Path, images_dir: str | Path, *, progress: bool = False) -> DatasetReport:
    """Check ``csv_path`` (VinDr format) against the images under ``images_dir``.

    Raises :class:`InputError` only for a CSV that cannot be read at all (or a missing image
    folder); every per-row or per-image problem is collected in the returned report.
    ``progress`` shows a progress bar while the images are read.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found")
    table = read_vindr_csv(csv_path)
    report = DatasetReport(csv_path=csv_path, images_dir=images_dir)
    report.unknown_columns = list(table.attrs.get("unknown_columns", []))
    _count(report, table)

    image_ids = list(dict.fromkeys(table["image_id"]))
    report.n_images_listed = len(image_ids)
    iterator = image_ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(image_ids, desc="checking images", unit="image")
    first_rows = table.reset_index().drop_duplicates("image_id").set_index("image_id")[ROW_INDEX_NAME]
    for image_id in iterator:
        try:
            path = resolve_image_path(images_dir, image_id, where=f"{csv_path} row {first_rows[image_id]}")
        except InputError as exc:
            report.refused_paths.append((image_id, str(exc)))
            continue
        if path is None:
            report.missing_files.append(image_id)
            continue
        report.n_images_found += 1
        try:
            image = read_image(path)
        except InputError as exc:
            report.unreadable_files.append((image_id, str(exc)))
            continue
        except Exception as exc:  # one bad image never stops the check
            report.unreadable_files.append((image_id, f"{path}: {type(exc).__name__}: {exc}"))
            continue
        report.image_sizes[image_id] = (image.height, image.width)
        del image
    report.n_images_readable = len(report.image_sizes)

    _check_boxes(report, table)
    report.duplicate_rows = _duplicate_rows(table)
    _check_mixed_labels(report, table)
    return report


def _count(report: DatasetReport, table: pd.DataFrame) -> None:
    report.n_rows = len(table)
    report.n_boxes = int((table["lesion_type"] != NO_FINDING).sum())
    report.counts_per_lesion = {str(k): int(v) for k, v in table["lesion_type"].value_counts().items()}
    report.counts_per_reader = {
        str(k): int(v) for k, v in table["rad_id"].value_counts().sort_index().items()
    }
    per_image = table.drop_duplicates(["image_id", "lesion_type"])["lesion_type"].value_counts()
    report.images_per_lesion = {str(k): int(v) for k, v in per_image.items()}


def _check_boxes(report: DatasetReport, table: pd.DataFrame) -> None:
    boxed = table[table["lesion_type"] != NO_FINDING]
    for row, record in zip(boxed.index, boxed.itertuples(index=False), strict=True):
        height, width = report.image_sizes.get(record.image_id, (None, None))
        problems = box_problems((record.xmin, record.ymin, record.xmax, record.ymax), width, height)
        if problems.degenerate:
            report.degenerate_boxes.append((int(row), record.image_id, "; ".join(problems.degenerate)))
        outside = list(problems.outside)
        if problems.fully_outside:
            outside.append("the box lies entirely outside the image")
        if outside:
            report.out_of_image_boxes.append((int(row), record.image_id, "; ".join(outside)))


def _duplicate_rows(table: pd.DataFrame) -> list[int]:
    duplicated = table.duplicated(subset=ANNOTATION_COLUMNS, keep="first")
    return [int(row) for row in table.index[duplicated]]


def _check_mixed_labels(report: DatasetReport, table: pd.DataFrame) -> None:
    """Warn when one reader marks an image both "No finding" and with a lesion."""
    flags = table.assign(nf=table["lesion_type"] == NO_FINDING).groupby(["image_id", "rad_id"])["nf"]
    mixed = flags.nunique()
    for image_id, rad_id in mixed[mixed > 1].index:
        reader = f"reader '{rad_id}'" if rad_id else "a reader"
        report.warnings.append(f"image {image_id}: {reader} gave both '{NO_FINDING}' and a lesion box")
