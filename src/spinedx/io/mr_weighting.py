"""The MR weighting of a series (T1 or T2), from its DICOM header or, failing that, its name.

Pfirrmann grades are defined on T2-weighted images (Pfirrmann et al., Spine 2001): the nucleus
signal they grade is dark on T1. A study's fused Pfirrmann grade therefore comes from its T2-weighted
series when it has one, and a T1-weighted series' own Pfirrmann grade carries a warning.

Header rule (spin-echo conventions): T2 when echo time >= 60 ms and repetition time >= 1500 ms, T1
when echo time <= 30 ms and repetition time <= 1000 ms; otherwise (proton density, STIR, missing
times) the series description, protocol and sequence names decide, then the file or folder name:
a ``t1``/``t2`` token such as ``104_t2.png``, ``T2_TSE_SAG`` or ``sag_t1w``. None when nothing says.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

T1 = "T1"
T2 = "T2"
_TOKEN = re.compile(r"(?<![a-z0-9])t([12])(?![0-9])", re.IGNORECASE)
_DESCRIPTIONS = ("SeriesDescription", "ProtocolName", "SequenceName")


def weighting_from_name(name: str) -> str | None:
    """T1/T2 from a ``t1``/``t2`` token in ``name``; None when it has neither or both."""
    found = {f"T{match}" for match in _TOKEN.findall(name)}
    return found.pop() if len(found) == 1 else None


def weighting_from_header(ds) -> str | None:
    """T1/T2 from a DICOM header's echo and repetition times, else its descriptions; None if unsure."""
    echo, repetition = _number(ds.get("EchoTime")), _number(ds.get("RepetitionTime"))
    if echo is not None and repetition is not None:
        if echo >= 60.0 and repetition >= 1500.0:
            return T2
        if echo <= 30.0 and repetition <= 1000.0:
            return T1
    text = " ".join(str(ds.get(keyword, "")) for keyword in _DESCRIPTIONS)
    return weighting_from_name(text)


def mr_weighting(path: str | Path) -> str | None:
    """The weighting of the series at ``path`` (a DICOM file or series folder, a volume or an image).

    Never raises: an unreadable header falls back to the name, and the answer may be None.
    """
    path = Path(path)
    header = _first_dicom_header(path)
    if header is not None:
        found = weighting_from_header(header)
        if found is not None:
            return found
    return weighting_from_name(path.name)


def _first_dicom_header(path: Path):
    """The header of ``path`` or, for a folder, of its first file that reads as DICOM; None otherwise."""
    import pydicom

    candidates = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for candidate in candidates[:8]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return pydicom.dcmread(candidate, stop_before_pixels=True, specific_tags=_TAGS)
            except Exception:  # not DICOM, or damaged: the name decides
                continue
    return None


_TAGS = ["EchoTime", "RepetitionTime", *_DESCRIPTIONS]


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number > 0 else None
