"""read_vindr_csv: VinDr annotation CSV -> internal annotation table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS, NO_FINDING
from spinedx.io.vindr import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, read_vindr_csv

HEADER = "image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax"


def write(tmp_path, text: str, name: str = "ann.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_column_constants():
    assert REQUIRED_COLUMNS == ("image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax")
    assert OPTIONAL_COLUMNS == ("rad_id", "study_id", "series_id")


def test_reads_boxes_and_no_finding(tmp_path):
    path = write(
        tmp_path,
        f"{HEADER}\nimg1,R1,Osteophytes,10,20,30.5,40\n"
        "img1,R2,Disc space narrowing,1,2,3,4\nimg2,R1,No finding,,,,\n",
    )
    table = read_vindr_csv(path)
    assert list(table.columns) == ANNOTATION_COLUMNS
    assert len(table) == 3
    assert table["lesion_type"].tolist() == ["Osteophytes", "Disc space narrowing", NO_FINDING]
    assert table.iloc[0][["xmin", "ymin", "xmax", "ymax"]].tolist() == [10.0, 20.0, 30.5, 40.0]
    assert table.iloc[2][["xmin", "ymin", "xmax", "ymax"]].isna().all()
    for column in ("xmin", "ymin", "xmax", "ymax"):
        assert table[column].dtype == float
    # defaults for optional columns
    assert table["study_id"].tolist() == ["img1", "img1", "img2"]
    assert table["series_id"].tolist() == ["", "", ""]
    # index = row number in the file (header = row 1)
    assert table.index.tolist() == [2, 3, 4]
    assert table.attrs["unknown_columns"] == []


def test_empty_boxes_become_no_finding(tmp_path):
    table = read_vindr_csv(write(tmp_path, "image_id,lesion_type,xmin,ymin,xmax,ymax\nimg3,,,,,\n"))
    assert table.iloc[0]["lesion_type"] == NO_FINDING
    assert table.iloc[0]["rad_id"] == ""
    assert math.isnan(table.iloc[0]["xmin"])


def test_no_finding_with_placeholder_box_gets_nan_box(tmp_path):
    table = read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,no finding,0,0,1,1\n"))
    assert table.iloc[0]["lesion_type"] == NO_FINDING
    assert table.iloc[0][["xmin", "ymin", "xmax", "ymax"]].isna().all()


def test_optional_columns_kept_and_extra_columns_dropped(tmp_path):
    text = (
        "Image_ID , study_id,series_id,rad_id,lesion_type,xmin,ymin,xmax,ymax,note\n"
        "img1,st1,se1,R3,Osteophytes,1,2,3,4,hello\n"
        "img2,,,R3,No finding,,,,,\n"
    )
    table = read_vindr_csv(write(tmp_path, text))
    assert list(table.columns) == ANNOTATION_COLUMNS
    assert table.iloc[0][["study_id", "series_id", "rad_id"]].tolist() == ["st1", "se1", "R3"]
    assert table.iloc[1]["study_id"] == "img2"
    assert table.attrs["unknown_columns"] == ["note"]


def test_blank_lines_keep_file_row_numbers(tmp_path):
    path = write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,1,2,3,4\n\nimg2,R1,Osteophytes,1,2,3,x\n")
    with pytest.raises(InputError, match=r"row 4 column 'ymax': 'x' is not a number"):
        read_vindr_csv(path)


def test_utf8_bom_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + f"{HEADER}\nimg1,R1,Osteophytes,1,2,3,4\n").encode("utf-8"))
    assert read_vindr_csv(path)["image_id"].tolist() == ["img1"]


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv: file not found"):
        read_vindr_csv(tmp_path / "nope.csv")


def test_missing_column(tmp_path):
    path = write(tmp_path, "image_id,lesion_type,ymin,xmax,ymax\nimg1,Osteophytes,1,2,3\n")
    with pytest.raises(InputError, match=r"ann\.csv: missing column 'xmin'$"):
        read_vindr_csv(path)


def test_missing_columns_listed(tmp_path):
    path = write(tmp_path, "image_id,lesion_type\nimg1,Osteophytes\n")
    with pytest.raises(InputError, match=r"missing columns 'xmin', 'ymin', 'xmax', 'ymax'"):
        read_vindr_csv(path)


def test_non_numeric_coordinate_names_row_and_column(tmp_path):
    rows = [f"img{i},R1,Osteophytes,1,2,3,4" for i in range(5)] + ["img9,R1,Osteophytes,abc,2,3,4"]
    path = write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        read_vindr_csv(path)
    assert str(info.value) == f"{path} row 7 column 'xmin': 'abc' is not a number"


def test_infinite_coordinate(tmp_path):
    with pytest.raises(InputError, match=r"row 2 column 'xmax': 'inf' is not a finite number"):
        read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,1,2,inf,4\n"))


def test_malformed_csv(tmp_path):
    path = write(tmp_path, f'{HEADER}\nimg1,R1,"Osteophytes,1,2,3,4\n')
    with pytest.raises(InputError, match=r"ann\.csv: cannot parse CSV: ") as info:
        read_vindr_csv(path)
    assert "\n" not in str(info.value)


def test_row_with_too_many_fields(tmp_path):
    path = write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,1,2,3,4\nimg2,R1,Osteophytes,1,2,3,4,5,6\n")
    with pytest.raises(InputError, match=r"cannot parse CSV: .*line 3"):
        read_vindr_csv(path)


def test_every_row_too_long_is_not_taken_as_an_index(tmp_path):
    path = write(tmp_path, "image_id,lesion_type,xmin,ymin,xmax,ymax\nimg1,X,1,2,3,4,5,6\n")
    with pytest.raises(InputError, match="cannot parse CSV: data rows have more fields than the header"):
        read_vindr_csv(path)


def test_binary_file(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    with pytest.raises(InputError, match=r"ann\.csv: cannot parse CSV: not UTF-8"):
        read_vindr_csv(path)


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match=r"ann\.csv: no rows"):
        read_vindr_csv(write(tmp_path, ""))


def test_header_only(tmp_path):
    with pytest.raises(InputError, match=r"ann\.csv: no rows$"):
        read_vindr_csv(write(tmp_path, HEADER + "\n\n"))


def test_duplicate_header_column(tmp_path):
    path = write(tmp_path, "image_id,lesion_type,xmin,ymin,xmax,ymax,xmin\nimg1,X,1,2,3,4,5\n")
    with pytest.raises(InputError, match="column 'xmin' appears more than once"):
        read_vindr_csv(path)


def test_partial_box(tmp_path):
    with pytest.raises(InputError, match=r"row 2: incomplete box \(column 'xmax', 'ymax' empty\)"):
        read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,1,2,,\n"))


def test_lesion_without_box(tmp_path):
    with pytest.raises(InputError, match=r"row 2: lesion 'Osteophytes' has no box"):
        read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,,,,\n"))


def test_box_without_lesion_type(tmp_path):
    with pytest.raises(InputError, match=r"row 2 column 'lesion_type': empty"):
        read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,,1,2,3,4\n"))


def test_empty_image_id(tmp_path):
    with pytest.raises(InputError, match=r"row 3 column 'image_id': empty"):
        read_vindr_csv(write(tmp_path, f"{HEADER}\nimg1,R1,Osteophytes,1,2,3,4\n,R1,Osteophytes,1,2,3,4\n"))


def test_result_is_a_dataframe_with_string_ids(tmp_path):
    table = read_vindr_csv(write(tmp_path, f"{HEADER}\n0001,R1,Osteophytes,1,2,3,4\n"))
    assert isinstance(table, pd.DataFrame)
    assert table.iloc[0]["image_id"] == "0001"  # not parsed as a number
