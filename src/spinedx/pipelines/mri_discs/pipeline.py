"""Sagittal MRI → findings: check the input → localise discs → label levels → grade each disc → measure.

With a canal stenosis model (bundled when registered), each disc's grades gain ``stenosis``. When the grader
carries a canal fusion fitted with that same model (by sha256), its fused findings (herniation) take
the canal model's logit as well.

With an input check, findings.json gains ``input_check`` (class probabilities) and its warnings;
a slice that is very probably no spine MR image is not analysed further.

With a segmenter, each disc's measurements also carry posterior_extent_mm, canal_ap_mm and
disc_area_mm2 from the label map (:mod:`~spinedx.pipelines.mri_discs.measure_seg`; in px / px²
when the pixel spacing is unknown, as ``unit`` says).

:meth:`MriDiscPipeline.analyze_in_full` also returns, per disc, the Grad-CAM heatmap of the finding
that most needs explaining (:meth:`~spinedx.tasks.disc_grading.model.DiscGrader.evidence`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

import spinedx
from spinedx.io.findings import Disc, DiscGrades, DiscMeasurements, Findings, InputInfo, ModelInfo
from spinedx.io.mr_weighting import T1
from spinedx.io.volumes import SagittalSlice
from spinedx.models.registry import has_weights, resolve_weights
from spinedx.pipelines.mri_discs.measure import disc_heights
from spinedx.pipelines.mri_discs.measure_seg import measure_disc
from spinedx.tasks.canal_stenosis.model import REGISTRY_NAME as STENOSIS_NAME
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.disc_grading.model import REGISTRY_NAME as GRADER_NAME
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_localization.model import REGISTRY_NAME as LOCALIZER_NAME
from spinedx.tasks.disc_localization.model import DiscLocalizer
from spinedx.tasks.input_check.model import REGISTRY_NAME as INPUT_CHECK_NAME
from spinedx.tasks.input_check.model import InputCheck
from spinedx.tasks.spine_seg.model import REGISTRY_NAME as SEGMENTER_NAME
from spinedx.tasks.spine_seg.model import SpineSegmenter

TASK = "mri-discs"
MODEL_NAME = "spinedx-mri-discs"
NO_DISC_WARNING = "no intervertebral disc found: is this a sagittal spine MR image?"
CONSTANT_WARNING = "the image is constant (no contrast): nothing to analyse"
T1_PFIRRMANN_WARNING = (
    "this series looks T1-weighted: Pfirrmann grades are defined on T2-weighted images, so read them "
    "from a T2 series of the study"
)


@dataclass
class DiscEvidence:
    finding: str
    """The grade the heatmap explains (e.g. "herniation", "pfirrmann")."""
    heatmap: np.ndarray
    """Grad-CAM, float32 in [0, 1], same shape as the analysed slice."""
    model: str = GRADER_NAME
    """The bundled model whose logit the heatmap explains ("disc_grader" or "canal_stenosis")."""


@dataclass
class Analysis:
    findings: Findings
    label_map: np.ndarray | None
    """The segmenter's label map (None without a segmenter or for a slice not analysed)."""
    evidence: list[DiscEvidence]
    """One per disc of ``findings.discs``, same order."""


@dataclass
class MriDiscPipeline:
    localizer: DiscLocalizer
    grader: DiscGrader
    version: str
    segmenter: SpineSegmenter | None = None
    input_check: InputCheck | None = None
    stenosis: CanalStenosis | None = None

    @classmethod
    def bundled(cls) -> MriDiscPipeline:
        """The models shipped inside the package (verified against their sha256)."""
        localizer_weights = resolve_weights(LOCALIZER_NAME)
        grader_weights = resolve_weights(GRADER_NAME)
        version = f"{spinedx.__version__}+loc.{localizer_weights.version}.grade.{grader_weights.version}"
        # Each file is resolved (and its sha256 checked) once: hashing is a visible part of a cold start.
        segmenter = None
        if has_weights(SEGMENTER_NAME):
            weights = resolve_weights(SEGMENTER_NAME)
            segmenter = SpineSegmenter.load(weights.path, weights.version)
            version += f".seg.{weights.version}"
        input_check = None
        if has_weights(INPUT_CHECK_NAME):
            weights = resolve_weights(INPUT_CHECK_NAME)
            input_check = InputCheck.load(weights.path)
            version += f".check.{weights.version}"
        stenosis = None
        if has_weights(STENOSIS_NAME):
            weights = resolve_weights(STENOSIS_NAME)
            stenosis = CanalStenosis.load(weights.path, weights.sha256)
            version += f".sten.{weights.version}"
        return cls(
            DiscLocalizer.load(localizer_weights.path),
            DiscGrader.load(grader_weights.path),
            version,
            segmenter,
            input_check,
            stenosis,
        )

    @property
    def fuses_canal(self) -> bool:
        """Whether the grader's canal fusion applies: its canal model is this pipeline's stenosis model."""
        if self.stenosis is None:
            return False
        sha256 = self.grader.canal_model_sha256
        return sha256 is not None and self.stenosis.sha256 == sha256

    @property
    def operating_points(self) -> dict[str, float]:
        """The threshold per binary finding of the probabilities this pipeline writes."""
        return self.grader.operating_points(self.fuses_canal)

    def _canal_evidence(self, evidence: list[DiscEvidence], pixels: np.ndarray, boxes, labels) -> None:
        """A fused finding's heatmap from the canal model (whose logit ranks it) instead of the grader's."""
        if not (self.fuses_canal and self.stenosis.has_evidence):
            return
        fused = set(self.grader.canal_fusion["findings"])
        rows = [row for row, item in enumerate(evidence) if item.finding in fused]
        if not rows:
            return
        heatmaps = self.stenosis.evidence(pixels, [boxes[row] for row in rows], [labels[row] for row in rows])
        for row, heatmap in zip(rows, heatmaps, strict=True):
            evidence[row] = DiscEvidence(evidence[row].finding, heatmap, STENOSIS_NAME)

    def segment(self, image: SagittalSlice) -> np.ndarray | None:
        """The label map of ``image``, or None without a segmenter."""
        return None if self.segmenter is None else self.segmenter.segment(image)

    def analyze(self, image: SagittalSlice, image_id: str) -> Findings:
        """The findings alone (no heatmaps: what evaluation needs)."""
        return self.analyze_in_full(image, image_id, evidence=False).findings

    # The traced programs run as recorded: TorchScript's optimising executor profiles and recompiles
    # each program on its first calls, ~0.35 s of a one-slice run, to save ~0.02 s a slice afterwards.
    # Findings and heatmaps are the same either way.
    @torch.jit.optimized_execution(False)
    def analyze_in_full(self, image: SagittalSlice, image_id: str, *, evidence: bool = True) -> Analysis:
        """Findings, the label map they used and (with ``evidence``) one heatmap per disc."""
        started = time.perf_counter()
        pixels = image.pixels
        warnings = list(image.warnings)
        discs: list[Disc] = []
        disc_evidence: list[DiscEvidence] = []
        extra = {}
        constant = float(np.ptp(pixels)) == 0.0
        refused = False
        if self.input_check is not None and not constant:
            verdict = self.input_check.check(pixels)
            warnings.extend(verdict.warnings)
            extra["input_check"] = verdict.probabilities
            refused = verdict.refuse
        label_map = None if constant or refused else self.segment(image)
        if constant:
            warnings.append(CONSTANT_WARNING)
        elif not refused:
            detections, detection_warnings = self.localizer.detect(pixels)
            warnings.extend(detection_warnings)
            if not detections:
                warnings.append(NO_DISC_WARNING)
            else:
                boxes = [detection.box for detection in detections]
                labels = [detection.ivd_label for detection in detections]
                canal_logits = None if self.stenosis is None else self.stenosis.logits(pixels, boxes, labels)
                fusion_input = canal_logits if self.fuses_canal else None
                if evidence:
                    grades, explained, heatmaps = self.grader.grade_and_explain(
                        pixels, boxes, labels, fusion_input
                    )
                    disc_evidence = [DiscEvidence(*pair) for pair in zip(explained, heatmaps, strict=True)]
                    self._canal_evidence(disc_evidence, pixels, boxes, labels)
                else:
                    grades = self.grader.grade(pixels, boxes, labels, fusion_input)
                if canal_logits is not None:
                    for grade, probability in zip(
                        grades, self.stenosis.calibrated(canal_logits), strict=True
                    ):
                        grade["stenosis"] = {"probability": float(probability)}
                heights = disc_heights(boxes, labels, image.pixel_spacing_mm)
                if image.weighting == T1:
                    warnings.append(T1_PFIRRMANN_WARNING)
                discs = [
                    Disc(
                        level=detection.level,
                        ivd_label=detection.ivd_label,
                        box=[round(float(value), 1) for value in detection.box],
                        score=round(float(detection.score), 4),
                        grades=DiscGrades.model_validate(grade),
                        measurements=DiscMeasurements(
                            height_px=round(height.height_px, 2),
                            height_mm=None if height.height_mm is None else round(height.height_mm, 2),
                            height_ratio=None
                            if height.height_ratio is None
                            else round(height.height_ratio, 3),
                            **_segmentation_measurements(label_map, detection.box, image.pixel_spacing_mm),
                        ),
                    )
                    for detection, grade, height in zip(detections, grades, heights, strict=True)
                ]
        height, width = pixels.shape
        findings = Findings(
            input=InputInfo(
                path=str(image.path),
                image_id=image_id,
                task=TASK,
                modality=image.modality,
                width=width,
                height=height,
                pixel_spacing_mm=list(image.pixel_spacing_mm) if image.pixel_spacing_mm else None,
                slice_index=image.slice_index,
                weighting=image.weighting,
            ),
            model=ModelInfo(name=MODEL_NAME, version=self.version),
            discs=discs,
            warnings=warnings,
            timing_s={"total": round(time.perf_counter() - started, 4)},
            **extra,
        )
        return Analysis(findings, label_map, disc_evidence)


def _segmentation_measurements(label_map: np.ndarray | None, box, pixel_spacing_mm) -> dict:
    """The label-map measurements of one disc as findings keys; none without a label map."""
    if label_map is None:
        return {}
    measured = measure_disc(label_map, tuple(box), pixel_spacing_mm)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "posterior_extent_mm": rounded(measured.posterior_extent),
        "canal_ap_mm": rounded(measured.canal_ap),
        "disc_area_mm2": rounded(measured.disc_area),
        "unit": measured.unit,
    }
