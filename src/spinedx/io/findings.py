"""``findings.json`` (schema ``spinedx/findings@1``): the one output of analysis.

The report, the viewer, the evaluation and any export read it. Extend it by adding keys, never
by renaming. Boxes are (xmin, ymin, xmax, ymax) in pixels of the analysed image (for volumes,
of the chosen slice as laid out cranial-up / anterior-left).

Keys added with the spine segmenter (issue 4; present only when a segmenter ran): per disc,
``measurements`` gains ``posterior_extent_mm``, ``canal_ap_mm``, ``disc_area_mm2`` and ``unit``
("mm", or "px" when the pixel spacing is unknown: the three values are then px / px²); the
findings gain ``masks`` (label-map PNG), ``mask_labels`` (its ``labels.json``) and, for volume
inputs, ``mask_nifti``, each a path relative to findings.json.

Per disc, ``evidence`` (present when analysis made a heatmap) names the Grad-CAM PNG for one finding
of that disc and the model it explains: ``{"heatmap": "evidence/L4-L5.png", "finding": "herniation",
"model": "canal_stenosis"}`` — an 8-bit grayscale image the size of the analysed slice (255 = the
strongest evidence for that disc).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from spinedx.io.atomic import atomic_write_text

SCHEMA = "spinedx/findings@1"


class _Open(BaseModel):
    # Later versions may add keys; readers of @1 must keep working.
    model_config = ConfigDict(extra="allow")


class InputInfo(_Open):
    path: str
    image_id: str
    task: str
    modality: str | None = None
    width: int
    height: int
    pixel_spacing_mm: list[float] | None = None
    slice_index: int | None = None
    weighting: str | None = None
    """"T1" or "T2" when the header or the file name says (Pfirrmann grades are defined on T2)."""


class ModelInfo(_Open):
    name: str
    version: str


class Probability(_Open):
    probability: float = Field(ge=0.0, le=1.0)


class OrdinalGrade(_Open):
    grade: int
    probabilities: list[float]


class DiscGrades(_Open):
    herniation: Probability
    bulging: Probability
    narrowing: Probability
    pfirrmann: OrdinalGrade
    modic: OrdinalGrade
    up_endplate: Probability
    low_endplate: Probability
    spondylolisthesis: Probability
    stenosis: Probability | None = Field(default=None, exclude_if=lambda value: value is None)
    """Central canal stenosis, when a stenosis model ran (the bundled one is trained on lumbar515)."""


class DiscMeasurements(_Open):
    height_mm: float | None
    height_px: float
    height_ratio: float | None


class Evidence(_Open):
    heatmap: str
    """Path of the heatmap PNG, relative to findings.json."""
    finding: str
    """The grade it explains, a key of the disc's ``grades``."""
    model: str | None = None
    """The bundled model whose logit it explains: "disc_grader", or "canal_stenosis" for a finding
    fused with the canal model (herniation)."""


class Disc(_Open):
    level: str
    ivd_label: int
    box: list[float] = Field(min_length=4, max_length=4)
    score: float
    grades: DiscGrades
    measurements: DiscMeasurements
    evidence: Evidence | None = Field(default=None, exclude_if=lambda value: value is None)


class Findings(_Open):
    schema_: str = Field(SCHEMA, alias="schema")
    input: InputInfo
    model: ModelInfo
    discs: list[Disc] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    timing_s: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, allow_nan=False)


def write_findings(findings: Findings, path: Path) -> Path:
    atomic_write_text(path, findings.to_json())
    return path


def read_findings(path: Path) -> Findings:
    return Findings.model_validate_json(Path(path).read_text())
