"""Sagittal MRI → findings: localise discs → label levels → grade each disc → measure."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import spinedx
from spinedx.io.findings import Disc, DiscGrades, DiscMeasurements, Findings, InputInfo, ModelInfo
from spinedx.io.volumes import SagittalSlice
from spinedx.models.registry import resolve_weights
from spinedx.pipelines.mri_discs.grade import DiscGrader
from spinedx.pipelines.mri_discs.localize import DiscLocalizer
from spinedx.pipelines.mri_discs.measure import disc_heights

TASK = "mri-discs"
MODEL_NAME = "spinedx-mri-discs"
NO_DISC_WARNING = "no intervertebral disc found: is this a sagittal spine MR image?"
CONSTANT_WARNING = "the image is constant (no contrast): nothing to analyse"


@dataclass
class MriDiscPipeline:
    localizer: DiscLocalizer
    grader: DiscGrader
    version: str

    @classmethod
    def bundled(cls) -> MriDiscPipeline:
        """The models shipped inside the package (verified against their sha256)."""
        localizer_weights = resolve_weights("disc_localizer")
        grader_weights = resolve_weights("disc_grader")
        version = f"{spinedx.__version__}+loc.{localizer_weights.version}.grade.{grader_weights.version}"
        return cls(DiscLocalizer.load(localizer_weights.path), DiscGrader.load(grader_weights.path), version)

    def analyze(self, image: SagittalSlice, image_id: str) -> Findings:
        started = time.perf_counter()
        pixels = image.pixels
        warnings = list(image.warnings)
        discs: list[Disc] = []
        if float(np.ptp(pixels)) == 0.0:
            warnings.append(CONSTANT_WARNING)
        else:
            detections, detection_warnings = self.localizer.detect(pixels)
            warnings.extend(detection_warnings)
            if not detections:
                warnings.append(NO_DISC_WARNING)
            else:
                boxes = [detection.box for detection in detections]
                labels = [detection.ivd_label for detection in detections]
                grades = self.grader.grade(pixels, boxes, labels)
                heights = disc_heights(boxes, labels, image.pixel_spacing_mm)
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
                        ),
                    )
                    for detection, grade, height in zip(detections, grades, heights, strict=True)
                ]
        height, width = pixels.shape
        return Findings(
            input=InputInfo(
                path=str(image.path),
                image_id=image_id,
                task=TASK,
                modality=image.modality,
                width=width,
                height=height,
                pixel_spacing_mm=list(image.pixel_spacing_mm) if image.pixel_spacing_mm else None,
                slice_index=image.slice_index,
            ),
            model=ModelInfo(name=MODEL_NAME, version=self.version),
            discs=discs,
            warnings=warnings,
            timing_s={"total": round(time.perf_counter() - started, 4)},
        )
