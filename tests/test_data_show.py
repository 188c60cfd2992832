"""render_annotations: boxes, labels and "No finding" banners drawn onto images."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from spinedx.data.show import lesion_colour, render_annotations
from spinedx.io.annotations import ANNOTATION_COLUMNS, NO_FINDING

NAN = float("nan")


def table(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (image_id, rad_id, lesion_type, xmin, ymin, xmax, ymax)."""
    frame = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS[:7])
    frame["study_id"] = frame["image_id"]
    frame["series_id"] = ""
    return frame[ANNOTATION_COLUMNS]


def grey_png(folder, image_id: str, size=(200, 160), value: int = 60):
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(folder / f"{image_id}.png")


def test_draws_boxes_labels_and_banner(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    grey_png(images, "a")
    grey_png(images, "b")
    annotations = table(
        [
            ("a", "R1", "Osteophytes", 40, 60, 120, 140),
            ("a", "R2", "Disc space narrowing", 10, 5, 60, 50),
            ("b", "R3", NO_FINDING, NAN, NAN, NAN, NAN),
        ]
    )
    written = render_annotations(annotations, images, out)
    assert written == [out.resolve() / "a.png", out.resolve() / "b.png"]
    assert written.skipped == []

    a = np.asarray(Image.open(out / "a.png").convert("RGB"))
    assert a.shape == (160, 200, 3)
    # box outline in the lesion colour, interior untouched
    assert tuple(a[100, 40]) == lesion_colour("Osteophytes")
    assert tuple(a[100, 80]) == (60, 60, 60)
    # a filled label sits just above the Osteophytes box
    above = a[45:59, 40:120].reshape(-1, 3)
    assert (above == lesion_colour("Osteophytes")).all(axis=1).sum() > 50
    # the second box is near the top: its label goes inside the box
    assert (a[5:20, 10:60].reshape(-1, 3) == lesion_colour("Disc space narrowing")).all(axis=1).sum() > 50

    b = np.asarray(Image.open(out / "b.png").convert("RGB"))
    assert (b[2, :] != (60, 60, 60)).any(axis=1).all()  # banner across the top
    assert tuple(b[150, 100]) == (60, 60, 60)
    assert not list(out.glob(".*"))  # no temp files left behind


def test_unreadable_and_missing_images_are_skipped(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    grey_png(images, "good")
    (images / "bad.png").write_bytes(b"not a png")
    annotations = table(
        [
            ("bad", "R1", "Osteophytes", 1, 1, 5, 5),
            ("gone", "R1", "Osteophytes", 1, 1, 5, 5),
            ("good", "R1", "Osteophytes", 1, 1, 5, 5),
        ]
    )
    written = render_annotations(annotations, images, out)
    assert [p.name for p in written] == ["good.png"]
    reasons = dict(written.skipped)
    assert set(reasons) == {"bad", "gone"}
    assert "cannot decode image" in reasons["bad"]
    assert not (out / "bad.png").exists()


def test_image_ids_and_limit(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    for name in ("a", "b", "c"):
        grey_png(images, name, size=(50, 40))
    annotations = table([(name, "R1", "Osteophytes", 1, 1, 20, 20) for name in ("a", "b", "c")])
    assert [p.name for p in render_annotations(annotations, images, out, limit=2)] == ["a.png", "b.png"]
    picked = render_annotations(annotations, images, out / "pick", image_ids=["c", "zzz"])
    assert [p.name for p in picked] == ["c.png"]
    assert picked.skipped == [("zzz", "no annotations for this image")]


def test_image_id_cannot_escape_out_dir(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    grey_png(images / "sub", "x", size=(50, 40))
    annotations = table([("sub/x", "", "Osteophytes", 1, 1, 20, 20)])
    written = render_annotations(annotations, images, out)
    assert written == [out.resolve() / "sub" / "x.png"]
    weird = table([("../images/sub/x", "", "Osteophytes", 1, 1, 20, 20)])
    escaped = render_annotations(weird, images, out)
    assert len(escaped) == 1 and escaped[0].parent == out.resolve()


def test_unknown_lesion_types_get_stable_colours():
    assert lesion_colour("Something new") == lesion_colour("Something new")
    assert len(lesion_colour("Something new")) == 3


# --------------------------------------------------------------------------- atomic writes (used above)


def test_atomic_writes(tmp_path):
    import os
    import stat

    import pytest

    from spinedx.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text

    target = tmp_path / "deep" / "report.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, not mkstemp's 0600
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"

    with atomic_path(tmp_path / "table.csv") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".csv") and tmp != tmp_path / "table.csv"
        tmp.write_text("a,b\n")
    assert (tmp_path / "table.csv").read_text() == "a,b\n"

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"new"  # old content kept
    assert sorted(os.listdir(target.parent)) == ["report.txt"]  # temp file removed
