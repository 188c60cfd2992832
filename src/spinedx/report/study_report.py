"""A self-contained HTML page per analysed input: overlay, per-disc table, warnings."""

from __future__ import annotations

import base64
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2

from spinedx.io.atomic import atomic_write_text
from spinedx.io.findings import Findings


@cache
def _template() -> jinja2.Template:
    source = resources.files("spinedx.report").joinpath("templates/study.html.j2").read_text(encoding="utf-8")
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(source)


def write_study_report(path: Path, findings: Findings, overlay_png: bytes) -> Path:
    html = _template().render(findings=findings, overlay_png=base64.b64encode(overlay_png).decode("ascii"))
    atomic_write_text(path, html)
    return path
