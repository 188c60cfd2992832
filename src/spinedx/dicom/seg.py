"""masks.png label map -> DICOM Segmentation (BINARY, highdicom) on the source image.

Segments follow :data:`spinedx.io.masks.SEG_LABELS`: 1 vertebra, 2 intervertebral disc,
3 spinal canal (segment number = label value), each an "Anatomical Structure" with a SNOMED CT
type (:mod:`spinedx.dicom.codes`). The label map is laid back onto the stored source image
(:class:`~spinedx.dicom.source.SourceImage`), so the SEG frames align with the image they
reference; a segment absent from the slice keeps its (empty) frame, so a reader sees that the
class was looked for and not found rather than a missing segment.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.content import AlgorithmIdentificationSequence
from highdicom.seg import Segmentation, SegmentDescription

import spinedx
from spinedx.dicom import codes
from spinedx.dicom.source import SourceImage
from spinedx.errors import InputError
from spinedx.io.findings import Findings
from spinedx.io.masks import CANAL, DISC, SEG_LABELS, VERTEBRA

SERIES_NUMBER = 9902
SERIES_DESCRIPTION = f"spinedx spine masks; {codes.RESEARCH_NOTE}"

SEGMENT_TYPES = {VERTEBRA: codes.VERTEBRA, DISC: codes.INTERVERTEBRAL_DISC, CANAL: codes.SPINAL_CANAL}
"""Label value (= segment number) -> SNOMED CT segmented property type."""


def build_seg(findings: Findings, label_map: np.ndarray, image: SourceImage) -> Segmentation:
    """A BINARY SEG of ``label_map`` (display layout, values in SEG_LABELS) on ``image``.

    Raises :class:`InputError` when the label map's size differs from the analysed slice or
    it holds values that are not spinedx classes.
    """
    expected = (findings.input.height, findings.input.width)
    if label_map.shape != expected:
        raise InputError(
            f"masks.png is {label_map.shape[1]}x{label_map.shape[0]} but the analysed slice is "
            f"{expected[1]}x{expected[0]} (width x height)"
        )
    unknown = sorted(set(np.unique(label_map).tolist()) - set(SEG_LABELS))
    if unknown:
        raise InputError(
            f"masks.png holds values {unknown} that are not spinedx classes {sorted(SEG_LABELS)}"
        )
    algorithm = AlgorithmIdentificationSequence(
        name=codes.DEVICE_NAME,
        family=codes.AI_FAMILY,
        version=spinedx.__version__,
        parameters={"model": f"{findings.model.name} {findings.model.version}"},
    )
    return Segmentation(
        source_images=[image.dataset],
        pixel_array=image.to_stored(label_map.astype(np.uint8)),
        segmentation_type="BINARY",
        segment_descriptions=[_segment(label, algorithm) for label in sorted(SEGMENT_TYPES)],
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=codes.DEVICE_NAME,
        software_versions=spinedx.__version__,
        device_serial_number="none",
        omit_empty_frames=False,
        content_label="SPINE",
        content_description=SERIES_DESCRIPTION,
        series_description=SERIES_DESCRIPTION,
        content_qualification="RESEARCH",
    )


def _segment(label: int, algorithm: AlgorithmIdentificationSequence) -> SegmentDescription:
    return SegmentDescription(
        segment_number=label,
        segment_label=SEG_LABELS[label],
        segmented_property_category=codes.ANATOMICAL_STRUCTURE,
        segmented_property_type=SEGMENT_TYPES[label],
        algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm,
        tracking_id=SEG_LABELS[label],
        tracking_uid=hd.UID(),
    )
