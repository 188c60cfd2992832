"""read_spider: the spider-sagittal layout (series, discs, gradings, optional spacing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SPIDER
from spinedx.errors import InputError
from spinedx.io.levels import GRADE_COLUMNS, LEVEL_NAMES, level_name
from spinedx.io.spider import SpiderDataset, read_spider

SERIES = """image_id,patient,sequence,width,height,n_boxes,n_graded_discs,boxes_match_gradings
1_t1,1,t1,40,60,2,3,1
1_t2,1,t2,40,60,,3,0
2_t2,2,t2,50,50,,1,0
"""
DISCS = """image_id,patient,sequence,ivd_label,level,xmin,ymin,xmax,ymax,herniation,bulging,narrowing,pfirrmann,modic,up_endplate,low_endplate,spondylolisthesis
1_t1,1,t1,1,L5/S1,10,40,30,50,1,1,0,4,2,1,0,0
1_t1,1,t1,2,L4/L5,10.5,20,30,30,0,0,1,2,0,0,1,1
"""
GRADINGS = """patient,ivd_label,level,herniation,bulging,narrowing,pfirrmann,modic,up_endplate,low_endplate,spondylolisthesis
1,1,L5/S1,1,1,0,4,2,1,0,0
1,2,L4/L5,0,0,1,2,0,0,1,1
1,3,L3/L4,0,0,0,1,0,0,0,0
2,0,IVD0,0,0,0,1,0,0,0,0
"""


def make_root(tmp_path: Path, **files: str | None) -> Path:
    """A spider-sagittal folder; ``files`` overrides (or, with None, removes) a CSV by stem."""
    root = tmp_path / "spider"
    (root / "images").mkdir(parents=True)
    contents = {"series": SERIES, "discs": DISCS, "gradings": GRADINGS, **files}
    for stem, text in contents.items():
        if text is not None:
            (root / f"{stem}.csv").write_text(text, encoding="utf-8")
    for image_id, width, height in (("1_t1", 40, 60), ("1_t2", 40, 60), ("2_t2", 50, 50)):
        Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "images" / f"{image_id}.png")
    return root


def edit(text: str, row: int, column: str, value: str) -> str:
    """``text`` with the cell at file row ``row`` (header = 1) and ``column`` set to ``value``."""
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def drop_column(text: str, column: str) -> str:
    rows = [line.split(",") for line in text.splitlines()]
    at = rows[0].index(column)
    return "\n".join(",".join(r[:at] + r[at + 1 :]) for r in rows) + "\n"


def test_constants():
    assert GRADE_COLUMNS == (
        "herniation",
        "bulging",
        "narrowing",
        "pfirrmann",
        "modic",
        "up_endplate",
        "low_endplate",
        "spondylolisthesis",
    )
    assert [LEVEL_NAMES[i] for i in range(1, 10)] == [
        "L5/S1",
        "L4/L5",
        "L3/L4",
        "L2/L3",
        "L1/L2",
        "T12/L1",
        "T11/T12",
        "T10/T11",
        "T9/T10",
    ]
    assert LEVEL_NAMES[17] == "T1/T2" and LEVEL_NAMES[18] == "C7/T1"
    assert level_name(0) == "IVD0" and level_name(2) == "L4/L5"


def test_reads_the_layout(tmp_path):
    root = make_root(tmp_path)
    data = read_spider(root)
    assert isinstance(data, SpiderDataset) and data.root == root

    assert data.series["image_id"].tolist() == ["1_t1", "1_t2", "2_t2"]
    assert data.series["patient"].tolist() == ["1", "1", "2"]
    assert data.series["n_boxes"].tolist()[0] == 2 and data.series["n_boxes"].isna().tolist() == [
        False,
        True,
        True,
    ]
    assert str(data.series["n_boxes"].dtype) == "Int64"
    assert data.series["width"].dtype == np.int64
    assert data.series.index.tolist() == [2, 3, 4]
    assert data.series.index.name == "csv_row"

    discs = data.discs
    assert discs["level"].tolist() == ["L5/S1", "L4/L5"]
    assert discs[["xmin", "ymin", "xmax", "ymax"]].iloc[1].tolist() == [10.5, 20.0, 30.0, 30.0]
    assert discs["xmin"].dtype == np.float64
    for column in ("ivd_label", *GRADE_COLUMNS):
        assert discs[column].dtype == np.int64
    assert discs["pfirrmann"].tolist() == [4, 2]
    assert discs.attrs["source"] == str(root / "discs.csv")

    assert len(data.gradings) == 4
    assert data.gradings["level"].tolist()[-1] == "IVD0"
    assert data.spacing.empty and list(data.spacing.columns) == ["image_id", "row_mm", "col_mm"]
    assert data.pixel_spacing("1_t1") is None

    assert data.image_path("1_t2") == root / "images" / "1_t2.png"
    with pytest.raises(InputError, match="no image_id 'nope'"):
        data.image_path("nope")


def test_optional_columns_are_derived(tmp_path):
    series = "image_id,patient,sequence,width,height\n1_t1,1,t1,40,60\n1_t2,1,t2,40,60\n2_t2,2,t2,50,50\n"
    discs = drop_column(drop_column(DISCS, "patient"), "sequence")
    data = read_spider(make_root(tmp_path, series=series, discs=discs))
    assert list(data.series.columns) == [
        "image_id",
        "patient",
        "sequence",
        "width",
        "height",
        "n_boxes",
        "n_graded_discs",
        "boxes_match_gradings",
    ]
    assert data.series["n_boxes"].tolist()[0] == 2 and data.series["n_boxes"].isna().sum() == 2
    assert data.series["n_graded_discs"].tolist() == [3, 3, 1]
    assert data.series["boxes_match_gradings"].tolist() == [1, 0, 0]
    assert data.discs["patient"].tolist() == ["1", "1"] and data.discs["sequence"].tolist() == ["t1", "t1"]


def test_spacing_csv(tmp_path):
    root = make_root(tmp_path)
    (root / "spacing.csv").write_text("image_id,row_mm,col_mm\n1_t1,0.5,0.6\n2_t2,1,1\n")
    data = read_spider(root)
    assert data.spacing["image_id"].tolist() == ["1_t1", "2_t2"]
    assert data.pixel_spacing("1_t1") == (0.5, 0.6) and data.pixel_spacing("1_t2") is None
    (root / "spacing.csv").write_text("image_id,row_mm,col_mm\n1_t1,0.5,-1\n")
    with pytest.raises(InputError, match=r"spacing\.csv row 2 column 'col_mm': -1 is not a positive spacing"):
        read_spider(root)
    (root / "spacing.csv").write_text("image_id,row_mm,col_mm\nzz,0.5,1\n")
    with pytest.raises(InputError, match=r"spacing\.csv row 2 column 'image_id': 'zz' is not in"):
        read_spider(root)


def test_header_only_discs_is_fine(tmp_path):
    data = read_spider(make_root(tmp_path, discs=DISCS.splitlines()[0] + "\n"))
    assert data.discs.empty
    assert list(data.discs.columns)[:5] == ["image_id", "patient", "sequence", "ivd_label", "level"]


@pytest.mark.parametrize("stem", ["series", "discs", "gradings"])
def test_missing_file(tmp_path, stem):
    with pytest.raises(InputError, match=rf"{stem}\.csv: file not found"):
        read_spider(make_root(tmp_path, **{stem: None}))


def test_missing_root_and_images(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        read_spider(tmp_path / "nope")
    root = make_root(tmp_path)
    (root / "images" / "1_t2.png").unlink()
    with pytest.raises(InputError, match=r"images: no image file for '1_t2' \(.*series\.csv row 3"):
        read_spider(root)


@pytest.mark.parametrize(
    ("stem", "column"),
    [("series", "width"), ("discs", "xmax"), ("discs", "pfirrmann"), ("gradings", "level")],
)
def test_missing_column(tmp_path, stem, column):
    text = {"series": SERIES, "discs": DISCS, "gradings": GRADINGS}[stem]
    with pytest.raises(InputError, match=rf"{stem}\.csv: missing column '{column}'"):
        read_spider(make_root(tmp_path, **{stem: drop_column(text, column)}))


@pytest.mark.parametrize(
    ("stem", "row", "column", "value", "message"),
    [
        ("discs", 3, "pfirrmann", "6", r"discs\.csv row 3 column 'pfirrmann': 6 is out of range \(allowed 1\.\.5\)"),
        ("discs", 2, "herniation", "2", r"discs\.csv row 2 column 'herniation': 2 is out of range \(allowed 0\.\.1\)"),
        ("gradings", 4, "modic", "4", r"gradings\.csv row 4 column 'modic': 4 is out of range \(allowed 0\.\.3\)"),
        ("gradings", 3, "pfirrmann", "0", r"gradings\.csv row 3 column 'pfirrmann': 0 is out of range"),
        ("discs", 2, "xmin", "abc", r"discs\.csv row 2 column 'xmin': 'abc' is not a number"),
        ("discs", 2, "modic", "1.5", r"discs\.csv row 2 column 'modic': '1\.5' is not a whole number"),
        ("gradings", 2, "bulging", "", r"gradings\.csv row 2 column 'bulging': empty"),
        ("series", 3, "height", "x", r"series\.csv row 3 column 'height': 'x' is not a number"),
        ("series", 2, "boxes_match_gradings", "2", r"series\.csv row 2 column 'boxes_match_gradings': 2 is out"),
        ("discs", 2, "level", "L4/L5", r"discs\.csv row 2 column 'level': 'L4/L5' does not match ivd_label 1 \(expected 'L5/S1'\)"),
        ("gradings", 5, "level", "L5/S1", r"gradings\.csv row 5 column 'level': 'L5/S1' does not match ivd_label 0 \(expected 'IVD0'\)"),
        ("gradings", 2, "ivd_label", "-1", r"gradings\.csv row 2 column 'ivd_label': -1 is out of range \(allowed >= 0\)"),
        ("discs", 2, "image_id", "9_t1", r"discs\.csv row 2 column 'image_id': '9_t1' is not in .*series\.csv"),
        ("discs", 2, "patient", "2", r"discs\.csv row 2 column 'patient': '2' differs from '1' in .*series\.csv row 2"),
        ("discs", 2, "xmax", "5", r"discs\.csv row 2: empty box \(xmin 10, ymin 40, xmax 5, ymax 50\)"),
        ("discs", 2, "ymax", "61", r"discs\.csv row 2: box \(10, 40, 30, 61\) lies outside the 40x60 image '1_t1'"),
        ("discs", 3, "bulging", "1", r"discs\.csv row 3 column 'bulging': 1 differs from 0 in .*gradings\.csv row 3"),
        ("discs", 3, "ivd_label", "4", r"discs\.csv row 3 column 'level': 'L4/L5' does not match ivd_label 4"),
    ],
)  # fmt: skip
def test_bad_cells(tmp_path, stem, row, column, value, message):
    texts = {"series": SERIES, "discs": DISCS, "gradings": GRADINGS}
    texts[stem] = edit(texts[stem], row, column, value)
    with pytest.raises(InputError, match=message):
        read_spider(make_root(tmp_path, **texts))


def test_disc_without_grading(tmp_path):
    gradings = "\n".join(line for line in GRADINGS.splitlines() if not line.startswith("1,2,")) + "\n"
    with pytest.raises(
        InputError, match=r"discs\.csv row 3: patient '1' disc 2 \(L4/L5\) has no row in .*gradings\.csv"
    ):
        read_spider(make_root(tmp_path, gradings=gradings))


def test_duplicates(tmp_path):
    with pytest.raises(InputError, match=r"series\.csv row 5: duplicate of row 2 \(image_id=1_t1\)"):
        read_spider(make_root(tmp_path, series=SERIES + "1_t1,1,t1,40,60,2,3,1\n"))
    with pytest.raises(
        InputError, match=r"gradings\.csv row 6: duplicate of row 2 \(patient=1, ivd_label=1\)"
    ):
        read_spider(make_root(tmp_path / "b", gradings=GRADINGS + "1,1,L5/S1,1,1,0,4,2,1,0,0\n"))


def test_repeated_header_column(tmp_path):
    series = SERIES.replace("width,height", "width,width", 1)
    with pytest.raises(InputError, match=r"series\.csv: column 'width' appears more than once"):
        read_spider(make_root(tmp_path, series=series))


def test_empty_series(tmp_path):
    with pytest.raises(InputError, match=r"series\.csv: no rows"):
        read_spider(make_root(tmp_path, series=SERIES.splitlines()[0] + "\n"))


@pytest.mark.real_data
@pytest.mark.skipif(not SPIDER.is_dir(), reason="shared/data/spider-sagittal not present")
def test_real_spider():
    data = read_spider(SPIDER)
    assert len(data.series) >= 200 and len(data.discs) >= 500 and len(data.gradings) >= 800
    assert set(data.series["sequence"]) <= {"t1", "t2", "t2_SPACE"}
    assert data.discs["herniation"].isin([0, 1]).all()
    assert data.discs["pfirrmann"].between(1, 5).all()
    first = data.series["image_id"].iloc[0]
    path = data.image_path(first)
    assert path.is_file() and path.suffix == ".png"
    with Image.open(path) as image:
        assert image.size == (data.series["width"].iloc[0], data.series["height"].iloc[0])
    merged = data.discs.merge(data.gradings, on=["patient", "ivd_label"], suffixes=("", "_g"))
    assert len(merged) == len(data.discs)
    assert (merged["level"] == merged["level_g"]).all()
    assert isinstance(data.gradings, pd.DataFrame) and data.spacing.empty
