"""Box validation (spinedx.io.boxes) and bounded crops: property tests and hostile boxes."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spinedx.data.crops import crop_box, extract_crops
from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS
from spinedx.io.boxes import box_problems, validate_box

coordinates = st.floats(allow_nan=True, allow_infinity=True, width=64)
sizes = st.integers(min_value=1, max_value=5000)


@settings(max_examples=400, deadline=None)
@given(st.tuples(coordinates, coordinates, coordinates, coordinates), sizes, sizes)
def test_validate_box_clips_inside_or_refuses_with_one_line(box, width, height):
    where = "ann.csv row 7"
    try:
        clipped, warning = validate_box(box, width, height, where)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(where) and "\n" not in message
        problems = box_problems(box, width, height)
        assert problems.degenerate or problems.fully_outside
        return
    xmin, ymin, xmax, ymax = clipped
    assert 0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height
    if clipped == tuple(float(v) for v in box):
        assert warning is None
    else:
        assert warning.startswith(where) and "clipped to" in warning and "\n" not in warning


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 255, allow_nan=False),
    st.floats(0, 255, allow_nan=False),
    st.floats(0.01, 100),
    st.floats(0.01, 100),
)
def test_boxes_inside_the_image_pass_unchanged(x, y, w, h):
    box = (x, y, min(x + w, 256.0), min(y + h, 256.0))
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    assert validate_box(box, 256, 256, "r") == (box, None)


@pytest.mark.parametrize(
    ("box", "fragment"),
    [
        ((10, 5, 3, 20), "xmax 3 <= xmin 10"),
        ((5, 5, 5, 20), "xmax 5 <= xmin 5"),
        ((1, 8, 9, 8), "ymax 8 <= ymin 8"),
        ((math.nan, 1, 2, 3), "xmin nan is not a finite number"),
        ((0, 0, math.inf, 3), "xmax inf is not a finite number"),
        ((300, 300, 400, 400), "lies entirely outside the 256x256 image"),
        ((-50, 10, -1, 20), "lies entirely outside"),
        ((256, 0, 300, 10), "lies entirely outside"),
    ],
)
def test_unusable_boxes_are_refused_naming_the_row(box, fragment):
    with pytest.raises(InputError, match="^ann.csv row 4: box ") as info:
        validate_box(box, 256, 256, "ann.csv row 4")
    assert fragment in str(info.value)


def test_partly_outside_box_is_clipped_with_a_sentence():
    box, warning = validate_box((-1e9, 10, 1e9, 20), 256, 200, "ann.csv row 3")
    assert box == (0.0, 10.0, 256.0, 20.0)
    assert warning == (
        "ann.csv row 3: box (xmin -1e+09, ymin 10, xmax 1e+09, ymax 20) reaches outside the 256x200 image "
        "(negative xmin -1e+09; xmax 1e+09 > image width 256); clipped to (xmin 0, ymin 10, xmax 256, ymax 20)"
    )


def test_far_edge_is_inside():
    assert validate_box((0, 0, 256, 200), 256, 200, "r") == ((0.0, 0.0, 256.0, 200.0), None)


# --------------------------------------------------------------------------- crops bounded by the image


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "box",
    [(-1e9, -1e9, 1e9, 1e9), (0, 0, 30000, 30000), (-1e300, 0, 1e300, 10), (100, 100, 1e12, 101)],
)
def test_huge_boxes_cost_no_more_than_the_image(box):
    pixels = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    start = time.perf_counter()
    peak = _peak_bytes(lambda: crop_box(pixels, box, size=64, margin=0.1))
    assert peak <= 2 * pixels.nbytes, peak
    assert time.perf_counter() - start < 2.0
    assert crop_box(pixels, box, size=64, margin=0.1).shape == (64, 64)


def test_box_just_larger_than_the_image_still_shows_the_image():
    pixels = np.ones((100, 100), dtype=np.float32)
    crop = crop_box(pixels, (-50, -50, 150, 150), size=40, margin=0.0)
    # the image is the central half of the crop: bright centre, black border
    assert crop[20, 20] > 200 and crop[2, 2] == 0 and crop[37, 37] == 0


def test_non_finite_box_cannot_be_cropped():
    with pytest.raises(InputError, match="non-finite"):
        crop_box(np.zeros((32, 32), np.float32), (math.nan, 0, 4, 4), size=8, margin=0.0)


def test_extract_crops_keeps_good_rows_clips_and_skips_bad_ones(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (256, 256), 90).save(images / "a.png")
    rows = pd.DataFrame(
        [
            ("a", "R1", "Osteophytes", 10, 10, 50, 50),  # row 2: fine
            ("a", "R1", "Osteophytes", -1e9, -1e9, 1e9, 1e9),  # row 3: clipped
            ("a", "R1", "Osteophytes", 50, 10, 10, 50),  # row 4: xmin > xmax
            ("a", "R1", "Osteophytes", 300, 300, 400, 400),  # row 5: entirely outside
        ],
        columns=ANNOTATION_COLUMNS[:7],
        index=pd.Index([2, 3, 4, 5], name="csv_row"),
    )
    rows["study_id"], rows["series_id"] = "a", ""
    rows.attrs["source"] = "ann.csv"
    result = extract_crops(rows, images, size=32, margin=0.1)
    assert result.crops.shape == (2, 32, 32)
    assert result.rows[["xmin", "xmax"]].to_numpy().tolist() == [[10, 50], [0, 256]]
    assert [line.split(":")[0] for line in result.skipped] == ["ann.csv row 4", "ann.csv row 5"]
    assert len(result.warnings) == 1 and result.warnings[0].startswith("ann.csv row 3: box")
