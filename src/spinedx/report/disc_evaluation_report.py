"""Self-contained HTML report of ``spinedx evaluate-discs``."""

from __future__ import annotations

import base64
import math
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from spinedx.io.atomic import atomic_write_text
from spinedx.models.disc_grader import BINARY_TASKS


def _ci(entry: dict) -> str:
    if not entry or entry.get("estimate") is None or math.isnan(entry["estimate"]):
        return "—"
    return f"{entry['estimate']:.2f} ({entry['lower']:.2f}–{entry['upper']:.2f})"


def write_disc_evaluation_report(path: Path, metrics: dict, graded: pd.DataFrame, figures: dict[str, bytes],
                                 failures: list[tuple[str, bytes]]) -> Path:  # fmt: skip
    source = (
        resources.files("spinedx.report").joinpath("templates/disc_evaluation.html.j2").read_text("utf-8")
    )
    template = jinja2.Environment(autoescape=True).from_string(source)
    html = template.render(
        metrics=metrics,
        binary=[name for name in BINARY_TASKS if name in metrics.get("grading", {})],
        ci=_ci,
        figures=[(caption, base64.b64encode(png).decode("ascii")) for caption, png in figures.items()],
        failures=[(caption, base64.b64encode(png).decode("ascii")) for caption, png in failures],
        n_graded=len(graded),
    )
    atomic_write_text(path, html)
    return path
