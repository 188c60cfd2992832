"""check_dataset: CSV + image folder -> DatasetReport."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spinedx.data.check import DatasetReport, check_dataset
from spinedx.errors import InputError
from spinedx.io.annotations import NO_FINDING

HEADER = "image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax"


def make_png(folder, image_id: str, width: int = 40, height: int = 30):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(folder / f"{image_id}.png")


def write_csv(tmp_path, rows: list[str], header: str = HEADER):
    path = tmp_path / "ann.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    make_png(folder, "a")
    make_png(folder, "b")
    return folder


def test_clean_dataset_is_ok(tmp_path, images):
    csv = write_csv(
        tmp_path,
        ["a,R1,Osteophytes,1,2,10,12", "a,R2,Osteophytes,0,0,40,30", "b,R1,No finding,,,,"],
    )
    report = check_dataset(csv, images)
    assert isinstance(report, DatasetReport)
    assert report.ok(), report.to_text()
    assert report.n_rows == 3 and report.n_boxes == 2
    assert report.n_images_listed == 2 and report.n_images_found == 2 and report.n_images_readable == 2
    assert report.counts_per_lesion == {"Osteophytes": 2, NO_FINDING: 1}
    assert report.counts_per_reader == {"R1": 2, "R2": 1}
    assert report.images_per_lesion == {"Osteophytes": 1, NO_FINDING: 1}
    assert report.image_sizes == {"a": (30, 40), "b": (30, 40)}
    assert "Dataset check: OK" in report.to_text()


def test_problems_are_collected_with_file_row_numbers(tmp_path, images):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    csv = write_csv(
        tmp_path,
        [
            "a,R1,Osteophytes,1,2,10,12",  # row 2: fine
            "a,R1,Osteophytes,-3,2,10,12",  # row 3: negative
            "a,R1,Osteophytes,5,2,41,31",  # row 4: beyond width and height
            "a,R1,Osteophytes,10,2,10,12",  # row 5: xmax <= xmin
            "a,R1,Osteophytes,1,2,10,12",  # row 6: duplicate of row 2
            "missing,R1,Osteophytes,1,2,3,4",  # row 7: no file
            "broken,R1,Osteophytes,1,2,3,4",  # row 8: undecodable
            "b,R1,No finding,,,,",  # row 9
            "a,R1,Osteophytes,0,0,40,30",  # row 10: touches the far edges: fine
        ],
        header=HEADER + ",comment",
    )
    report = check_dataset(csv, images)
    assert not report.ok()
    assert report.missing_files == ["missing"]
    assert [image_id for image_id, _ in report.unreadable_files] == ["broken"]
    assert "cannot decode image" in report.unreadable_files[0][1]
    assert report.out_of_image_boxes == [
        (3, "a", "negative xmin -3"),
        (4, "a", "xmax 41 > image width 40; ymax 31 > image height 30"),
    ]
    assert report.degenerate_boxes == [(5, "a", "xmax 10 <= xmin 10")]
    assert report.duplicate_rows == [6]
    assert report.unknown_columns == ["comment"]
    assert report.n_images_listed == 4 and report.n_images_found == 3 and report.n_images_readable == 2
    assert report.n_errors == 6

    text = report.to_text()
    assert "6 problem(s) found" in text
    for fragment in (
        "missing image files: 1",
        "row 3 (a): negative xmin -3",
        "duplicate rows: 1",
        "'comment'",
    ):
        assert fragment in text

    data = report.to_dict()
    json.dumps(data)  # serialisable
    assert data["ok"] is False
    assert data["degenerate_boxes"] == [{"row": 5, "image_id": "a", "reason": "xmax 10 <= xmin 10"}]
    assert data["unreadable_files"][0]["image_id"] == "broken"


def test_negative_box_flagged_even_without_image(tmp_path, images):
    report = check_dataset(write_csv(tmp_path, ["ghost,R1,Osteophytes,-1,2,3,4"]), images)
    assert report.missing_files == ["ghost"]
    assert report.out_of_image_boxes == [(2, "ghost", "negative xmin -1")]


def test_each_image_is_read_once(tmp_path, images, monkeypatch):
    import spinedx.data.check as check

    calls = []
    real = check.read_image
    monkeypatch.setattr(check, "read_image", lambda path: calls.append(path) or real(path))
    rows = [f"a,R{i},Osteophytes,1,2,3,4" for i in range(5)] + ["b,R1,No finding,,,,"]
    check_dataset(write_csv(tmp_path, rows), images)
    assert sorted(p.name for p in calls) == ["a.png", "b.png"]


def test_unexpected_exception_does_not_stop_the_check(tmp_path, images, monkeypatch):
    import spinedx.data.check as check

    real = check.read_image

    def flaky(path):
        if path.stem == "a":
            raise MemoryError("boom")
        return real(path)

    monkeypatch.setattr(check, "read_image", flaky)
    report = check_dataset(write_csv(tmp_path, ["a,R1,Osteophytes,1,2,3,4", "b,R1,No finding,,,,"]), images)
    assert report.unreadable_files[0][0] == "a" and "MemoryError" in report.unreadable_files[0][1]
    assert report.n_images_readable == 1


def test_mixed_labels_warn_but_do_not_fail(tmp_path, images):
    report = check_dataset(write_csv(tmp_path, ["a,R1,Osteophytes,1,2,3,4", "a,R1,No finding,,,,"]), images)
    assert report.ok()
    assert report.warnings and "reader 'R1'" in report.warnings[0]


def test_bad_csv_raises(tmp_path, images):
    csv = write_csv(tmp_path, ["a,R1,Osteophytes,1,2,abc,4"])
    with pytest.raises(InputError, match=r"row 2 column 'xmax'"):
        check_dataset(csv, images)


def test_empty_csv_raises(tmp_path, images):
    with pytest.raises(InputError, match="no rows"):
        check_dataset(write_csv(tmp_path, []), images)


def test_missing_images_dir(tmp_path):
    csv = write_csv(tmp_path, ["a,R1,Osteophytes,1,2,3,4"])
    with pytest.raises(InputError, match="image folder not found"):
        check_dataset(csv, tmp_path / "nowhere")


def test_long_lists_are_truncated_in_text(tmp_path, images):
    rows = [f"m{i},R1,Osteophytes,1,2,3,4" for i in range(30)]
    text = check_dataset(write_csv(tmp_path, rows), images).to_text()
    assert "missing image files: 30" in text and "... and 10 more" in text
