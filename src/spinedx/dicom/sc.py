"""overlay.png -> DICOM Secondary Capture in the source study, as a new series (highdicom).

The overlay keeps the analysed slice's layout (anterior left, cranial up), which
PatientOrientation records; patient and study attributes come from the source image so that
the capture files next to it in a PACS.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.sc import SCImage

import spinedx
from spinedx.dicom import codes
from spinedx.dicom.source import SourceImage
from spinedx.errors import InputError
from spinedx.io.findings import Findings

SERIES_NUMBER = 9903
SERIES_DESCRIPTION = f"spinedx overlay; {codes.RESEARCH_NOTE}"


def build_sc(findings: Findings, overlay: np.ndarray, image: SourceImage) -> SCImage:
    """An RGB Secondary Capture of ``overlay`` (height x width x 3, uint8, display layout).

    The overlay may be an integer upsampling of the analysed slice (the renderer draws at 2x so
    labels stay legible); the pixel spacing is scaled to match. Raises :class:`InputError` when
    the overlay is not an 8-bit RGB image of the slice's size times a whole factor.
    """
    height, width = findings.input.height, findings.input.width
    scale = overlay.shape[0] // height if overlay.ndim == 3 else 0
    if overlay.dtype != np.uint8 or scale < 1 or overlay.shape != (height * scale, width * scale, 3):
        raise InputError(
            f"overlay.png is {overlay.shape} {overlay.dtype}; expected an 8-bit RGB image of the "
            f"analysed slice's {width}x{height} pixels times a whole factor"
        )
    spacing = findings.input.pixel_spacing_mm
    spacing = (spacing[0] / scale, spacing[1] / scale) if spacing else None
    capture = SCImage.from_ref_dataset(
        ref_dataset=image.dataset,
        pixel_array=overlay,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        pixel_spacing=spacing,
        patient_orientation=image.patient_orientation,
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=codes.DEVICE_NAME,
        software_versions=spinedx.__version__,
    )
    # Laterality (Type 2C) is required for paired body parts only; naming the body part lets a
    # validator see that the spine is unpaired. The input check accepted the image as a spine MR.
    capture.BodyPartExamined = image.dataset.get("BodyPartExamined") or "SPINE"
    return capture
