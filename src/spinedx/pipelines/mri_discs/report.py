"""Self-contained HTML report of ``spinedx evaluate-discs``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from spinedx.io.atomic import atomic_write_text
from spinedx.report.html import load_template, png_base64
from spinedx.tasks.disc_grading.network import BINARY_TASKS


def _ci(entry: dict) -> str:
    if not entry or entry.get("estimate") is None or math.isnan(entry["estimate"]):
        return "—"
    return f"{entry['estimate']:.2f} ({entry['lower']:.2f}–{entry['upper']:.2f})"


def write_disc_evaluation_report(path: Path, metrics: dict, graded: pd.DataFrame, figures: dict[str, bytes],
                                 failures: list[tuple[str, bytes]]) -> Path:  # fmt: skip
    html = load_template("disc_evaluation.html.j2").render(
        metrics=metrics,
        binary=[name for name in BINARY_TASKS if name in metrics.get("grading", {})],
        ci=_ci,
        figures=[(caption, png_base64(png)) for caption, png in figures.items()],
        failures=[(caption, png_base64(png)) for caption, png in failures],
        n_graded=len(graded),
    )
    atomic_write_text(path, html)
    return path
