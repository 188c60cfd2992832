"""findings.json -> DICOM Comprehensive 3D SR, TID 1500 Measurement Report (highdicom).

One measurement group (TID 1411, planar ROI) per disc:

- tracking identifier "disc L4/L5" with a new tracking UID;
- finding site: the disc level in SNOMED CT (:func:`spinedx.dicom.codes.disc_level`);
- region: the disc box as a closed POLYLINE (SCOORD) on the stored source image;
- measurements in UCUM units: disc height (DCM 121207 "Height", mm), posterior extent (mm),
  spinal-canal antero-posterior diameter (SCT "Diameter" with finding site "Vertebral canal",
  mm) and disc area (mm2), each only when findings.json has a millimetre value;
- grades: each binary grade as a qualitative evaluation Present/Absent (cut-off
  :data:`~spinedx.dicom.codes.PROBABILITY_THRESHOLD`) plus its probability as a measurement
  in UCUM ``1``; Pfirrmann grade and Modic type as coded values plus the probability of the
  reported grade;
- algorithm identification: spinedx and its version, the model name/version as parameter.

The document is flagged ContentQualification RESEARCH and its series description says that
spinedx is not a medical device.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForRegion,
    TrackingIdentifier,
)
from pydicom.sr.codedict import codes as dicom_codes

import spinedx
from spinedx.dicom import codes
from spinedx.dicom.source import SourceImage
from spinedx.io.findings import Disc, Findings
from spinedx.io.levels import GRADE_RANGES

SERIES_NUMBER = 9901
SERIES_DESCRIPTION = f"spinedx disc findings; {codes.RESEARCH_NOTE}"

_MM_MEASUREMENTS = (
    ("height_mm", codes.DISC_HEIGHT, codes.MILLIMETRE),
    ("posterior_extent_mm", codes.POSTERIOR_EXTENT, codes.MILLIMETRE),
    ("canal_ap_mm", codes.CANAL_AP_DIAMETER, codes.MILLIMETRE),
    ("disc_area_mm2", codes.DISC_AREA, codes.SQUARE_MILLIMETRE),
)
"""findings.json measurement key -> (concept, unit); values in px are never written."""


def build_sr(findings: Findings, image: SourceImage) -> Comprehensive3DSR:
    """The TID 1500 report of ``findings`` on the source ``image`` (new study-level series).

    Boxes are mapped from the analysed slice (``findings.input`` height x width) onto the
    stored image with ``image``'s layout.
    """
    algorithm = AlgorithmIdentification(
        name=codes.DEVICE_NAME,
        version=spinedx.__version__,
        parameters=[f"model {findings.model.name} {findings.model.version}"],
    )
    shape = (findings.input.height, findings.input.width)
    groups = [_disc_group(disc, image, shape, algorithm) for disc in findings.discs]
    report = MeasurementReport(
        observation_context=_observation_context(findings),
        procedure_reported=dicom_codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return Comprehensive3DSR(
        evidence=[image.dataset],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
        content_qualification="RESEARCH",
        coding_schemes=[codes.coding_scheme()],
        manufacturer_model_name=codes.DEVICE_NAME,
        software_versions=spinedx.__version__,
    )


def _observation_context(findings: Findings) -> ObservationContext:
    """The observer is the spinedx device (no person observed or signed these findings)."""
    device = DeviceObserverIdentifyingAttributes(
        uid=codes.device_uid(),
        name=codes.DEVICE_NAME,
        manufacturer_name=codes.MANUFACTURER,
        model_name=findings.model.name,
    )
    return ObservationContext(
        observer_device_context=ObserverContext(
            observer_type=dicom_codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _disc_group(
    disc: Disc, image: SourceImage, shape: tuple[int, int], algorithm: AlgorithmIdentification
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """One TID 1411 group: the disc's region, site, measurements and grades."""
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"disc {disc.level}"),
        referenced_region=_region(disc.box, image, shape),
        finding_type=codes.INTERVERTEBRAL_DISC,
        algorithm_id=algorithm,
        finding_sites=[FindingSite(codes.disc_level(disc.level))],
        measurements=_measurements(disc),
        qualitative_evaluations=_evaluations(disc),
    )


def _region(box: list[float], image: SourceImage, shape: tuple[int, int]) -> ImageRegion:
    """The box (xmin, ymin, xmax, ymax) in display pixels as a closed polyline on the stored image."""
    xmin, ymin, xmax, ymax = box
    corners = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax], [xmin, ymin]])
    return ImageRegion(
        graphic_type=GraphicTypeValues.POLYLINE,
        graphic_data=image.points_to_stored(corners, shape),
        source_image=SourceImageForRegion.from_source_image(image.dataset),
    )


def _measurements(disc: Disc) -> list[Measurement]:
    """Millimetre measurements that findings.json has, then one probability per grade (the
    group's algorithm identification covers them all)."""
    values = disc.measurements.model_dump()
    out = []
    if values.get("unit", "mm") == "mm":
        for key, concept, unit in _MM_MEASUREMENTS:
            if values.get(key) is not None:
                sites = [FindingSite(codes.SPINAL_CANAL)] if key == "canal_ap_mm" else None
                out.append(
                    Measurement(name=concept, value=float(values[key]), unit=unit, finding_sites=sites)
                )
    for key, probability in _grade_probabilities(disc).items():
        out.append(Measurement(name=codes.probability_concept(key), value=probability, unit=codes.NO_UNITS))
    return out


def _binary_grades(disc: Disc) -> list[str]:
    """The binary grades the disc has (stenosis only when a stenosis model ran)."""
    return [key for key in codes.BINARY_GRADES if getattr(disc.grades, key, None) is not None]


def _grade_probabilities(disc: Disc) -> dict[str, float]:
    """Each binary grade's probability, and each ordinal grade's probability of the reported grade."""
    out = {key: float(getattr(disc.grades, key).probability) for key in _binary_grades(disc)}
    for key in codes.ORDINAL_GRADES:
        grade = getattr(disc.grades, key)
        out[key] = float(grade.probabilities[grade.grade - GRADE_RANGES[key][0]])
    return out


def _evaluations(disc: Disc) -> list[QualitativeEvaluation]:
    out = []
    for key in _binary_grades(disc):
        present = getattr(disc.grades, key).probability >= codes.PROBABILITY_THRESHOLD
        out.append(
            QualitativeEvaluation(codes.grade_concept(key), codes.PRESENT if present else codes.ABSENT)
        )
    for key in codes.ORDINAL_GRADES:
        grade = getattr(disc.grades, key).grade
        out.append(QualitativeEvaluation(codes.grade_concept(key), codes.ordinal_value(key, grade)))
    return out
