"""A self-contained HTML page per analysed input: overlay, per-disc table, warnings."""

from __future__ import annotations

from pathlib import Path

from spinedx.io.atomic import atomic_write_text
from spinedx.io.findings import Findings
from spinedx.report.html import load_template, png_base64


def write_study_report(
    path: Path, findings: Findings, overlay_png: bytes, evidence_pngs: list[bytes] | None = None
) -> Path:
    """``evidence_pngs``: one rendered heatmap per disc (same order as ``findings.discs``), or none."""
    html = load_template("study.html.j2", strict=True).render(
        findings=findings,
        overlay_png=png_base64(overlay_png),
        evidence=[
            (disc, png_base64(png)) for disc, png in zip(findings.discs, evidence_pngs or [], strict=False)
        ],
    )
    atomic_write_text(path, html)
    return path
