"""Coded concepts used by the DICOM writers: disc levels, segments, grades, the device.

Standard codes are looked up in pydicom's copy of the DICOM content mapping resource
(PS3.16) rather than typed in, so a typo fails loudly instead of writing a wrong code:

- disc levels: CID 7602 "Intervertebral Disc" (SNOMED CT), e.g. ``L4/L5 disc`` = SCT 84020006,
  ``L5/S1 disc`` = SCT 715056000, ``T12/L1 disc`` = SCT 76206002; every level spinedx names
  (C2/C3 .. L5/S1) is in it;
- segment categories and types: CID 7150 / CID 7151 (``Anatomical Structure``, ``Vertebra``);
  the spinal canal uses SCT 61853006 (``Vertebral canal``, CID 6115);
- units: UCUM (``mm``, ``mm2``, ``1``); presence: SCT ``Present`` / ``Absent`` (CID 240).

Two concepts are not in pydicom's dictionary: the generic intervertebral disc, SNOMED CT
360499006 "Intervertebral disc structure" (the code TotalSegmentator's DICOM SEG export uses
for its ``intervertebral_discs`` class), and the spinedx grades (herniation, bulging, Pfirrmann,
...) which have no standard codes; those use the private coding scheme :data:`SCHEME`
(designator starting with "99", as PS3.3 8.2 allows), declared in every object that uses it
through :func:`coding_scheme`.
"""

from __future__ import annotations

import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import spinedx
from spinedx.errors import InputError

SCHEME = "99SPINEDX"
"""Private coding scheme of the spinedx grade and measurement concepts."""

INTERVERTEBRAL_DISC = Code("360499006", "SCT", "Intervertebral disc")
VERTEBRA = codes.SCT.Vertebra
SPINAL_CANAL = codes.SCT.VertebralCanal
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
PRESENT, ABSENT = codes.SCT.Present, codes.SCT.Absent
MILLIMETRE, SQUARE_MILLIMETRE, NO_UNITS = (
    codes.UCUM.Millimeter,
    codes.UCUM.SquareMillimeter,
    codes.UCUM.NoUnits,
)

DISC_HEIGHT = codes.DCM.Height
CANAL_AP_DIAMETER = codes.SCT.Diameter
"""Measured with the finding site :data:`SPINAL_CANAL`, which says what the diameter is of."""
DISC_AREA = codes.SCT.Area
POSTERIOR_EXTENT = Code("POSTERIOR_EXTENT", SCHEME, "Posterior disc extent beyond the vertebral line")

BINARY_GRADES: dict[str, str] = {
    "herniation": "Disc herniation",
    "bulging": "Disc bulging",
    "narrowing": "Disc space narrowing",
    "up_endplate": "Upper endplate defect",
    "low_endplate": "Lower endplate defect",
    "spondylolisthesis": "Spondylolisthesis",
    "stenosis": "Central canal stenosis",
}
"""findings.json grade key -> meaning of its private concept (code = key upper-cased)."""
ORDINAL_GRADES: dict[str, str] = {"pfirrmann": "Pfirrmann grade", "modic": "Modic type"}

PROBABILITY_THRESHOLD = 0.5
"""A binary grade is reported Present at or above this probability (the study report's cut-off)."""

DEVICE_NAME = "spinedx"
MANUFACTURER = "spinedx project"
RESEARCH_NOTE = "research use only, not a medical device"
"""Appended to every series description (LO: the whole must fit in 64 characters)."""
AI_FAMILY = codes.DCM.ArtificialIntelligence


def grade_concept(key: str) -> Code:
    """The private concept of a binary or ordinal grade of findings.json (e.g. ``"herniation"``)."""
    meaning = BINARY_GRADES.get(key) or ORDINAL_GRADES[key]
    return Code(key.upper(), SCHEME, meaning)


def probability_concept(key: str) -> Code:
    """The private concept of a grade's probability (a measurement in UCUM ``1``)."""
    return Code(f"{key.upper()}_PROBABILITY", SCHEME, f"{grade_concept(key).meaning} probability")


def ordinal_value(key: str, grade: int) -> Code:
    """The private coded value of an ordinal grade, e.g. ``PFIRRMANN_3`` "Pfirrmann grade 3"."""
    return Code(f"{key.upper()}_{int(grade)}", SCHEME, f"{ORDINAL_GRADES[key]} {int(grade)}")


def disc_level(level: str) -> Code:
    """SNOMED CT code (CID 7602) of a disc level named like findings.json, e.g. ``"L4/L5"``.

    Raises :class:`InputError` for a name that is not a disc level between two vertebrae.
    """
    keyword = level.replace("/", "") + "Disc"
    try:
        return getattr(codes.SCT, keyword)
    except AttributeError:
        raise InputError(f"disc level {level!r} has no SNOMED CT code (expected e.g. 'L4/L5')") from None


def coding_scheme() -> CodingSchemeIdentificationItem:
    """Declaration of :data:`SCHEME` for CodingSchemeIdentificationSequence."""
    return CodingSchemeIdentificationItem(
        designator=SCHEME,
        name="spinedx disc grades",
        version=spinedx.__version__,
        responsible_organization=MANUFACTURER,
    )


def device_uid() -> str:
    """A UID for the spinedx device observer, the same for every run of one spinedx version."""
    return pydicom.uid.generate_uid(entropy_srcs=[DEVICE_NAME, spinedx.__version__])
