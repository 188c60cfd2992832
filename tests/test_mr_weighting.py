"""MR weighting (T1/T2) of a series: DICOM echo and repetition times first, then descriptions, then names."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_factory import new_mr_instance
from spinedx.io.mr_weighting import T1, T2, mr_weighting, weighting_from_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("104_t2.png", T2), ("0001_t1.png", T1), ("T2_TSE_SAG_384", T2), ("sag_t1w.nii.gz", T1),
        ("t2_SPACE", T2), ("scan_t12.png", None), ("st1r.png", None), ("t1_and_t2.png", None), ("study", None),
    ],
)  # fmt: skip
def test_weighting_from_a_name(name, expected):
    assert weighting_from_name(name) == expected


def _dicom(path: Path, **header) -> Path:
    ds = new_mr_instance()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_header_decides_before_the_name(tmp_path):
    # Times say T2 although the file name says t1: the acquisition wins.
    assert mr_weighting(_dicom(tmp_path / "sag_t1.dcm", EchoTime=100, RepetitionTime=3500)) == T2
    assert mr_weighting(_dicom(tmp_path / "a.dcm", EchoTime=12, RepetitionTime=550)) == T1
    # Proton density (long TR, short TE): the times do not tell; the description does, else nothing.
    assert mr_weighting(_dicom(tmp_path / "b.dcm", EchoTime=30, RepetitionTime=3000)) is None
    pd_t2 = _dicom(tmp_path / "c.dcm", EchoTime=30, RepetitionTime=3000, SeriesDescription="SAG T2 FRFSE")
    assert mr_weighting(pd_t2) == T2
    series = tmp_path / "series_t1"  # a series folder: its first DICOM file's header
    series.mkdir()
    (series / "0_readme.txt").write_text("not DICOM")
    _dicom(series / "1.dcm", EchoTime=90, RepetitionTime=4000)
    assert mr_weighting(series) == T2


def test_an_unreadable_or_silent_input_falls_back_to_its_name(tmp_path):
    broken = tmp_path / "sag_t2.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 10)
    assert mr_weighting(broken) == T2
    assert mr_weighting(tmp_path / "missing_t1.png") == T1
    (tmp_path / "plain.png").write_bytes(b"\x89PNG")
    assert mr_weighting(tmp_path / "plain.png") is None
