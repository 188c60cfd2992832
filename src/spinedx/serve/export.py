"""``spinedx reviews export``: reviewed MRI studies as training data in the spider-sagittal layout.

One image per study (the analysed slice, 8-bit PNG, named by the study's opaque id, which is also
its ``patient``), with every disc's box and the grades as reviewed: a person's value where one
corrected it, the model's where it was accepted. Discs rejected as discs are left out, and so is
a disc whose Pfirrmann or Modic grade was rejected without a corrected value (it has no grade to
learn). Only studies where every finding has a decision are exported. ``provenance.csv`` says
for each exported grade whether it came from the model or a person, and who decided last.

Radiograph studies would go to a VinDr CSV, but no radiograph task analyses uploads yet, so the
service holds none to export.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from spinedx.io.atomic import atomic_write_bytes, atomic_write_text
from spinedx.io.levels import GRADE_COLUMNS
from spinedx.io.output_location import atomic_directory
from spinedx.io.spider import DISCS_WRITTEN, GRADINGS_WRITTEN, SPACING_COLUMNS
from spinedx.serve.analysis import DONE, study_dir
from spinedx.serve.reviews import DISC, study_state
from spinedx.store import Store, Study

MRI_TASK = "mri-discs"
SEQUENCE = "reviewed"


@dataclass
class ExportSummary:
    out_dir: Path
    studies: int
    discs: int
    skipped_discs: int


def _csv(header: tuple[str, ...], rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _slice_png(data_dir: Path, study_id: str) -> tuple[bytes, int, int]:
    """The analysed slice as an 8-bit PNG (stored slices are 16-bit for deep sources)."""
    folder = study_dir(data_dir, study_id) / "slices"
    meta = json.loads((folder / "slices.json").read_text())
    with Image.open(folder / f"{meta['analysed_index']}.png") as image:
        pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels.astype(np.float64) / 65535 * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), int(meta["width"]), int(meta["height"])


def export_reviews(store: Store, out_dir: Path, since: datetime | None = None) -> ExportSummary:
    """Write every reviewed MRI study (latest decision at or after ``since``) into ``out_dir``."""
    data_dir = store.data_dir
    series, discs, gradings, spacing, provenance = [], [], [], [], []
    skipped = 0
    with store.session() as session:
        studies = session.scalars(
            select(Study).where(Study.status == DONE, Study.task == MRI_TASK).order_by(Study.created)
        )
        images: dict[str, bytes] = {}
        for study in studies:
            states = study_state(study)
            if not states or not all(state.decided for state in states.values()):
                continue
            if since is not None and max(review.time for review in study.reviews) < since:
                continue
            png, width, height = _slice_png(data_dir, study.id)
            images[study.id] = png
            series.append((study.id, study.id, SEQUENCE, width, height))
            pixel_spacing = study.findings["input"].get("pixel_spacing_mm")
            if pixel_spacing:
                spacing.append((study.id, *pixel_spacing))
            for disc in study.findings["discs"]:
                level = disc["level"]
                grades = [states[f"{level}:{name}"] for name in GRADE_COLUMNS]
                if states[f"{level}:{DISC}"].current_value is False or any(
                    g.current_value is None for g in grades
                ):
                    skipped += 1
                    continue
                values = [int(g.current_value) for g in grades]
                x0, y0, x1, y1 = disc["box"]
                box = (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
                discs.append((study.id, study.id, SEQUENCE, disc["ivd_label"], level, *box, *values))
                gradings.append((study.id, disc["ivd_label"], level, *values))
                for name, state in zip(GRADE_COLUMNS, grades, strict=True):
                    last = state.reviewers[-1] if state.reviewers else ""
                    provenance.append((study.id, level, name, state.source, last, study.model_version))
    with atomic_directory(out_dir) as work:
        for study_id, png in images.items():
            atomic_write_bytes(work / "images" / f"{study_id}.png", png)
        atomic_write_text(
            work / "series.csv", _csv(("image_id", "patient", "sequence", "width", "height"), series)
        )
        atomic_write_text(
            work / "discs.csv",
            _csv(
                DISCS_WRITTEN,
                discs,
            ),
        )
        atomic_write_text(work / "gradings.csv", _csv(GRADINGS_WRITTEN, gradings))
        if spacing:
            atomic_write_text(work / "spacing.csv", _csv(SPACING_COLUMNS, spacing))
        atomic_write_text(
            work / "provenance.csv",
            _csv(("image_id", "level", "grade", "source", "last_reviewer", "model_version"), provenance),
        )
    return ExportSummary(out_dir, len(series), len(discs), skipped)
