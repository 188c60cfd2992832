"""Tests of the procedural sagittal lumbar MRI generator (spider-sagittal layout)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from conftest import SPIDER
from spinedx.errors import InputError
from spinedx.synth import mri
from spinedx.synth.mri import LEVELS, generate_mri_dataset

SIZE = (192, 192)
SPACING = 1.8  # a 346 mm field of view, like 384 px at 0.9 mm

SERIES_COLUMNS = [
    "image_id",
    "patient",
    "sequence",
    "width",
    "height",
    "n_boxes",
    "n_graded_discs",
    "boxes_match_gradings",
]
GRADES = [
    "herniation",
    "bulging",
    "narrowing",
    "pfirrmann",
    "modic",
    "up_endplate",
    "low_endplate",
    "spondylolisthesis",
]
DISC_COLUMNS = [
    "image_id",
    "patient",
    "sequence",
    "ivd_label",
    "level",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    *GRADES,
]
GRADING_COLUMNS = ["patient", "ivd_label", "level", *GRADES]
SPACING_COLUMNS = ["image_id", "row_mm", "col_mm"]
HEADERS = {
    "series.csv": SERIES_COLUMNS,
    "discs.csv": DISC_COLUMNS,
    "gradings.csv": GRADING_COLUMNS,
    "spacing.csv": SPACING_COLUMNS,
}
SPIDER_LEVELS = ["L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11", "T9/T10"]


def _generate(out: Path, n_patients: int = 3, seed: int = 5, **kwargs) -> Path:
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("pixel_spacing_mm", SPACING)
    return generate_mri_dataset(out, n_patients, seed, **kwargs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("synth-mri"))


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _array(root: Path, folder: str, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(root / folder / f"{image_id}.png"))


def _discs(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "discs.csv")


def test_layout_and_columns_match_spider_sagittal(dataset):
    expected = ["discs.csv", "gradings.csv", "images", "masks", "series.csv", "spacing.csv"]
    assert sorted(p.name for p in dataset.iterdir()) == expected
    for name, columns in HEADERS.items():
        assert _header(dataset / name) == columns, name
    series = pd.read_csv(dataset / "series.csv")
    assert series["image_id"].tolist() == [f"{p}_{s}" for p in (1, 2, 3) for s in ("t1", "t2")]
    assert (series["image_id"] == series["patient"].astype(str) + "_" + series["sequence"]).all()
    assert (series["width"] == SIZE[1]).all() and (series["height"] == SIZE[0]).all()
    assert (series["n_boxes"] == series["n_graded_discs"]).all()
    assert (series["boxes_match_gradings"] == 1).all()
    discs, gradings = _discs(dataset), pd.read_csv(dataset / "gradings.csv")
    assert discs.groupby("image_id").size().reindex(series["image_id"]).tolist() == series["n_boxes"].tolist()
    assert (
        gradings.groupby("patient").size().reindex(series["patient"]).tolist()
        == series["n_graded_discs"].tolist()
    )
    assert series["n_graded_discs"].between(5, 9).all()
    for image_id in series["image_id"]:
        image, mask = (
            Image.open(dataset / "images" / f"{image_id}.png"),
            Image.open(dataset / "masks" / f"{image_id}.png"),
        )
        assert image.mode == "L" and mask.mode == "L"
        assert image.size == mask.size == (SIZE[1], SIZE[0])
    labels = json.loads((dataset / "masks" / "labels.json").read_text())
    assert labels == {"0": "background", "1": "vertebra", "2": "disc", "3": "spinal_canal"}
    spacing = pd.read_csv(dataset / "spacing.csv")
    assert spacing["image_id"].tolist() == series["image_id"].tolist()
    assert (spacing["row_mm"] == spacing["col_mm"]).all()
    assert spacing["row_mm"].between(0.8 * SPACING - 1e-9, 1.25 * SPACING + 1e-9).all()
    # Both series of a patient share its field of view; disc grades repeat the gradings.
    assert spacing.groupby(spacing["image_id"].str.split("_").str[0])["row_mm"].nunique().eq(1).all()
    merged = discs.merge(gradings, on=["patient", "ivd_label"], suffixes=("", "_g"), validate="many_to_one")
    for column in ["level", *GRADES]:
        assert (merged[column] == merged[f"{column}_g"]).all(), column


@pytest.mark.real_data
@pytest.mark.skipif(not SPIDER.is_dir(), reason="shared/data/spider-sagittal not present")
def test_headers_and_levels_equal_the_real_spider_files(dataset):
    for name in ("series.csv", "discs.csv", "gradings.csv"):
        assert _header(dataset / name) == _header(SPIDER / name), name
    named = set(enumerate(SPIDER_LEVELS, start=1))
    for table in (pd.read_csv(SPIDER / "discs.csv"), _discs(dataset)):
        assert set(zip(table["ivd_label"], table["level"], strict=True)) <= named


def test_grades_are_in_range_and_levels_follow_ivd_label(dataset):
    discs = _discs(dataset)
    assert list(LEVELS) == SPIDER_LEVELS
    assert (discs["level"] == discs["ivd_label"].map(lambda k: SPIDER_LEVELS[k - 1])).all()
    for column in GRADES:
        low, high = (1, 5) if column == "pfirrmann" else (0, 3) if column == "modic" else (0, 1)
        assert discs[column].between(low, high).all(), column
    for _, rows in discs.groupby("image_id"):
        assert rows["ivd_label"].tolist() == list(range(1, len(rows) + 1))


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = _generate(tmp_path / "a", 2, 11, image_size=(192, 160))
    second = _generate(tmp_path / "b", 2, 11, image_size=(192, 160))
    assert _files(first) == _files(second)
    assert not [name for name in _files(first) if ".tmp" in name]
    assert Image.open(first / "images" / "1_t1.png").size == (160, 192)  # (height, width) in, PIL (w, h) out
    third = _generate(tmp_path / "c", 2, 12, image_size=(192, 160))
    assert _files(first)["images/1_t2.png"] != _files(third)["images/1_t2.png"]


def test_patients_and_sequences_do_not_depend_on_the_others(tmp_path, dataset):
    small = _generate(tmp_path / "small", 2, 5, sequences=("t2",))
    files, full = _files(small), _files(dataset)
    for name in ("images/1_t2.png", "images/2_t2.png", "masks/2_t2.png"):
        assert files[name] == full[name], name
    assert "images/1_t1.png" not in files
    assert set(pd.read_csv(small / "series.csv")["sequence"]) == {"t2"}


def test_boxes_are_inside_the_image_and_hold_their_disc(dataset):
    discs = _discs(dataset)
    assert (discs[["xmin", "ymin"]] >= 0).all().all()
    assert (discs["xmax"] < SIZE[1]).all() and (discs["ymax"] < SIZE[0]).all()
    assert (discs["xmax"] > discs["xmin"]).all() and (discs["ymax"] > discs["ymin"]).all()
    for image_id, boxes in discs.groupby("image_id"):
        disc = _array(dataset, "masks", image_id) == 2
        parts, count = ndimage.label(disc, structure=np.ones((3, 3)))
        held = np.zeros(count + 1, bool)
        for box in boxes.itertuples():
            inside = np.zeros_like(disc)
            inside[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1] = True
            assert (disc & inside).sum() >= 3, (image_id, box.level)
            for part in np.unique(parts[disc & inside]):
                pixels = parts == part
                ys, xs = np.nonzero(pixels)
                centre_inside = box.xmin <= xs.mean() <= box.xmax and box.ymin <= ys.mean() <= box.ymax
                if centre_inside:
                    assert not (pixels & ~inside).any(), (image_id, box.level, "disc pixels outside its box")
                    held[part] = True
        # Any disc not boxed is the one cut by the top edge, above the graded ones.
        for part in np.flatnonzero(~held[1:]) + 1:
            ys, _ = np.nonzero(parts == part)
            assert ys.min() == 0, (image_id, "an unboxed disc inside the image")


def test_ivd_label_one_is_the_lowest_disc(dataset):
    discs = _discs(dataset)
    discs["cy"] = (discs["ymin"] + discs["ymax"]) / 2
    for _, rows in discs.groupby("image_id"):
        ordered = rows.sort_values("ivd_label")
        assert ordered["cy"].is_monotonic_decreasing and ordered["cy"].is_unique


def test_masks_use_labels_zero_to_three(dataset):
    for image_id in pd.read_csv(dataset / "series.csv")["image_id"]:
        mask = _array(dataset, "masks", image_id)
        assert set(np.unique(mask)) == {0, 1, 2, 3}, image_id


def test_csf_is_bright_on_t2_and_dark_on_t1(dataset):
    for patient in (1, 2, 3):
        ratios = {}
        for sequence in ("t1", "t2"):
            image = _array(dataset, "images", f"{patient}_{sequence}").astype(float)
            mask = ndimage.binary_erosion(_array(dataset, "masks", f"{patient}_{sequence}") == 3)
            bone = ndimage.binary_erosion(
                _array(dataset, "masks", f"{patient}_{sequence}") == 1, iterations=2
            )
            ratios[sequence] = image[mask].mean() / image[bone].mean()
        assert ratios["t1"] < 0.8 < 1.2 < ratios["t2"], (patient, ratios)


def _forced(monkeypatch, **per_level: dict) -> None:
    """Set grade prevalences (a 5-tuple for pfirrmann, shares for the rest) at some levels."""
    for level, grades in per_level.items():
        level = level.replace("_", "/")
        for name, value in grades.items():
            if name == "pfirrmann":
                monkeypatch.setitem(mri.PFIRRMANN_BY_LEVEL, level, value)
            else:
                monkeypatch.setitem(mri.PREVALENCE_BY_LEVEL[level], name, value)


def test_pfirrmann_5_nuclei_are_darker_than_pfirrmann_1_on_t2(tmp_path, monkeypatch):
    worn = {"pfirrmann": (0, 0, 0, 0, 1), "up_endplate": 0.0, "low_endplate": 0.0}
    healthy = {"pfirrmann": (1, 0, 0, 0, 0), "narrowing": 0.0, "up_endplate": 0.0, "low_endplate": 0.0}
    _forced(monkeypatch, L5_S1=worn, L4_L5=worn, L2_L3=healthy, L1_L2=healthy)
    root = _generate(tmp_path, 3, 21, sequences=("t2",))
    discs = _discs(root)
    assert set(discs.loc[discs["ivd_label"] <= 2, "pfirrmann"]) == {5}
    assert set(discs.loc[discs["ivd_label"].isin([4, 5]), "pfirrmann"]) == {1}
    assert (discs.loc[discs["pfirrmann"] == 5, "narrowing"] == 1).all()
    for image_id, boxes in discs.groupby("image_id"):
        image, mask = _array(root, "images", image_id).astype(float), _array(root, "masks", image_id)
        signal, height = {}, {}
        for box in boxes.itertuples():
            disc = np.zeros(mask.shape, bool)
            disc[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1] = (
                mask[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1] == 2
            )
            xs = np.nonzero(disc)[1]
            middle = (
                disc
                & (np.arange(mask.shape[1]) >= np.percentile(xs, 30))
                & (np.arange(mask.shape[1]) <= np.percentile(xs, 70))
            )
            signal[box.ivd_label] = image[middle].mean()
            height[box.ivd_label] = middle.sum() / max(np.unique(np.nonzero(middle)[1]).size, 1)
        assert max(signal[1], signal[2]) < min(signal[4], signal[5]), (image_id, signal)
        assert height[1] + height[2] < 0.9 * (height[4] + height[5]), (image_id, height)  # narrowed


def test_herniated_discs_reach_behind_the_vertebral_margin(tmp_path, monkeypatch):
    _forced(
        monkeypatch,
        L4_L5={"herniation": 1.0, "spondylolisthesis": 0.0},
        L5_S1={"herniation": 1.0, "spondylolisthesis": 0.0},
    )
    root = _generate(tmp_path, 3, 8, image_size=(256, 256), pixel_spacing_mm=1.35)
    discs = _discs(root)
    herniated = discs[discs["herniation"] == 1]
    assert set(herniated["ivd_label"]) == {1, 2} and len(herniated) == 12
    for box in herniated.itertuples():
        mask = _array(root, "masks", box.image_id)
        crop = mask[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1]
        ys, xs = np.nonzero(crop == 2)
        points = np.stack([xs, ys], 1).astype(float)
        centre = points.mean(0)
        # The disc's long axis runs front to back; orient it towards the back (+x).
        axis = np.linalg.svd(points - centre, full_matrices=False)[2][0]
        axis = axis if axis[0] > 0 else -axis
        vys, vxs = np.nonzero(crop == 1)
        bone = (np.stack([vxs, vys], 1) - centre) @ axis
        disc = (points - centre) @ axis
        assert disc.max() > bone.max() + 3.5, (
            box.image_id,
            box.level,
            disc.max(),
            bone.max(),
        )  # bulges < 3.5


def test_default_prevalences_are_like_spider():
    model = mri._grade_model()
    rng = np.random.default_rng(3)
    rows = [
        {"level": level, **grade}
        for _ in range(1500)
        for level, grade in zip(LEVELS, mri._draw_grades(rng, model, LEVELS), strict=True)
    ]
    grades = pd.DataFrame(rows)
    by_level = grades.groupby("level")
    assert by_level["herniation"].mean()["L4/L5"] == pytest.approx(0.198, abs=0.04)
    assert 0.03 < grades["herniation"].mean() < 0.08
    assert by_level["narrowing"].mean()["L5/S1"] == pytest.approx(0.603, abs=0.05)
    assert (
        by_level["pfirrmann"].mean().loc[["L5/S1", "L4/L5", "L3/L4"]] > by_level["pfirrmann"].mean()["T12/L1"]
    ).all()
    assert (grades.loc[grades["pfirrmann"] == 5, "narrowing"] == 1).all()
    assert (
        grades.loc[grades["pfirrmann"] >= 4, "narrowing"].mean()
        > 3 * grades.loc[grades["pfirrmann"] <= 2, "narrowing"].mean()
    )
    assert set(grades["modic"]) <= {0, 1, 2, 3} and (grades["modic"] == 2).mean() > 0.2
    slips = [sum(g["spondylolisthesis"] for g in mri._draw_grades(rng, model, LEVELS)) for _ in range(300)]
    assert max(slips) <= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_patients": 0}, "n_patients"),
        ({"n_patients": 2.5}, "n_patients"),
        ({"n_patients": True}, "n_patients"),
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"image_size": (192,)}, "image_size"),
        ({"image_size": (32, 32)}, "image_size"),
        ({"image_size": (192.0, 192.0)}, "image_size"),
        ({"image_size": 192}, "image_size"),
        ({"sequences": "t1"}, "sequences"),
        ({"sequences": ()}, "sequences"),
        ({"sequences": ("t1", "flair")}, "sequences"),
        ({"sequences": ("t2", "t2")}, "sequences"),
        ({"pixel_spacing_mm": 0}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": math.nan}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": "1.8"}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": 0.9}, "pixel_spacing_mm"),  # 192 px x 0.9 mm cannot hold the lumbar spine
    ],
)
def test_bad_arguments_raise_input_error_naming_them(tmp_path, kwargs, name):
    arguments = {"n_patients": 1, "seed": 1, "image_size": SIZE, "pixel_spacing_mm": SPACING, **kwargs}
    with pytest.raises(InputError, match=name):
        generate_mri_dataset(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()
