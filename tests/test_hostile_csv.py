"""CSV cells and whole CSV files from a hostile author: a value or one InputError line, nothing else."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinedx.errors import InputError
from spinedx.io.csv_cells import parse_finite_number
from spinedx.io.vindr import read_vindr_csv

HEADER = "image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=60), st.floats().map(repr), st.integers().map(str)))
def test_a_cell_is_a_finite_number_or_one_line_naming_file_row_column(cell):
    try:
        value = parse_finite_number(Path("ann.csv"), 7, "xmin", cell)
    except InputError as exc:
        message = str(exc)
        assert message.startswith("ann.csv row 7 column 'xmin': ")
        assert "\n" not in message and len(message) < 200
        return
    assert math.isfinite(value) and value == float(cell)


def test_a_huge_cell_is_shortened_in_the_message():
    try:
        parse_finite_number(Path("ann.csv"), 2, "xmin", "x" * 1_000_000)
    except InputError as exc:
        assert len(str(exc)) < 200 and "..." in str(exc)
    else:
        raise AssertionError("a non-number was accepted")


cells = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["", "nan", "inf", "-1e309", "1e308", "No finding", "Osteophytes", '"', "\x00", ",,"]),
    st.floats().map(repr),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(cells, min_size=0, max_size=9), max_size=6))
def test_any_vindr_csv_gives_a_table_or_one_input_error(rows):
    text = HEADER + "\n" + "\n".join(",".join(row) for row in rows) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ann.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            table = read_vindr_csv(path)
        except InputError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            return
    assert isinstance(table, pd.DataFrame) and len(table) >= 1
    boxes = table[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
    assert (pd.isna(boxes).all(axis=1) | pd.notna(boxes).all(axis=1)).all()
    assert pd.notna(boxes).sum() == 0 or all(math.isfinite(v) for v in boxes[pd.notna(boxes)])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_table_or_one_input_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ann.csv"
        path.write_bytes(HEADER.encode() + b"\n" + data)
        try:
            read_vindr_csv(path)
        except InputError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
