"""Tests of the procedural lateral lumbar radiograph generator."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS, BOX_COLUMNS, NO_FINDING
from spinedx.synth import xray
from spinedx.synth.xray import DEFAULT_CLASS_FREQUENCIES, LESION_TYPES, generate_xray_dataset

SIZE = 256
UNIFORM = dict.fromkeys(LESION_TYPES, 1.0)


def _read(csv_path) -> pd.DataFrame:
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False)


def _boxed(table: pd.DataFrame) -> pd.DataFrame:
    boxed = table[table["lesion_type"] != NO_FINDING].copy()
    boxed[BOX_COLUMNS] = boxed[BOX_COLUMNS].astype(int)
    return boxed


def _pixels(csv_path, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(csv_path.parent / "images" / f"{image_id}.png"))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    return generate_xray_dataset(tmp_path_factory.mktemp("default"), 120, 42, image_size=SIZE)


@pytest.fixture(scope="module")
def uniform_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("uniform")
    return generate_xray_dataset(out, 50, 3, image_size=SIZE, class_frequencies=UNIFORM, normal_fraction=0.1)


def _files(csv_path) -> dict[str, bytes]:
    root = csv_path.parent
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = generate_xray_dataset(tmp_path / "a", 4, 11, image_size=SIZE)
    second = generate_xray_dataset(tmp_path / "b", 4, 11, image_size=SIZE)
    assert _files(first) == _files(second)
    assert not [path for path in _files(first) if path.endswith(".tmp")]


def test_different_seed_gives_different_images(tmp_path):
    first = generate_xray_dataset(tmp_path / "a", 2, 11, image_size=SIZE)
    second = generate_xray_dataset(tmp_path / "b", 2, 12, image_size=SIZE)
    assert _files(first)["images/synx_00000.png"] != _files(second)["images/synx_00000.png"]


def test_more_images_keep_the_earlier_ones(tmp_path):
    small = generate_xray_dataset(tmp_path / "a", 3, 5, image_size=SIZE)
    large = generate_xray_dataset(tmp_path / "b", 6, 5, image_size=SIZE)
    for image_id in ("synx_00000", "synx_00001", "synx_00002"):
        assert np.array_equal(_pixels(small, image_id), _pixels(large, image_id))
    rows = _read(large)
    assert _read(small).equals(rows[rows["image_id"] <= "synx_00002"].reset_index(drop=True))


def test_csv_columns_ids_and_images(default_set):
    table = _read(default_set)
    assert list(table.columns) == ANNOTATION_COLUMNS
    assert table["image_id"].str.fullmatch(r"synx_\d{5}").all()
    assert set(table["rad_id"]) <= {"R1", "R2", "R3"}
    assert set(table["lesion_type"]) <= {*LESION_TYPES, NO_FINDING}
    image_ids = sorted(table["image_id"].unique())
    assert image_ids == [f"synx_{i:05d}" for i in range(120)]
    readers = table.groupby("image_id")["rad_id"].nunique()
    assert readers.between(1, 3).all() and (readers > 1).any()
    # One series per image; a study holds one or two exposures, some hold two.
    assert table.groupby("image_id")["series_id"].nunique().eq(1).all()
    assert table.groupby("series_id")["image_id"].nunique().eq(1).all()
    per_study = table.groupby("study_id")["image_id"].nunique()
    assert per_study.between(1, 2).all() and (per_study == 2).any()
    image = Image.open(default_set.parent / "images" / "synx_00000.png")
    assert image.mode == "L" and image.size == (SIZE, SIZE)


def test_boxes_are_integers_inside_the_image(default_set):
    table = _read(default_set)
    boxed = table[table["lesion_type"] != NO_FINDING]
    assert boxed[BOX_COLUMNS].apply(lambda column: column.str.fullmatch(r"\d+")).all().all()
    boxes = _boxed(table)
    assert (boxes[["xmin", "ymin"]] >= 0).all().all()
    assert (boxes[["xmax", "ymax"]] <= SIZE).all().all()
    assert (boxes["xmax"] - boxes["xmin"] >= 2).all() and (boxes["ymax"] - boxes["ymin"] >= 2).all()


def test_no_finding_rows_have_empty_boxes_one_per_reader(default_set):
    table = _read(default_set)
    normal = table[table["lesion_type"] == NO_FINDING]
    assert len(normal) > 0
    assert (normal[BOX_COLUMNS] == "").all().all()
    assert not normal.duplicated(["image_id", "rad_id"]).any()
    boxed_readers = set(zip(*_boxed(table)[["image_id", "rad_id"]].values.T, strict=True))
    assert not boxed_readers & set(zip(normal["image_id"], normal["rad_id"], strict=True))


def test_every_lesion_type_appears(uniform_set):
    counts = _boxed(_read(uniform_set))["lesion_type"].value_counts()
    for kind in LESION_TYPES:
        assert counts.get(kind, 0) >= 5, kind


def test_default_frequencies_are_roughly_honoured(default_set):
    assert sum(DEFAULT_CLASS_FREQUENCIES.values()) == pytest.approx(1.0)
    table = _read(default_set)
    shares = _boxed(table)["lesion_type"].value_counts(normalize=True)
    assert shares.index[0] == "Osteophytes"
    assert 0.4 <= shares["Osteophytes"] <= 0.7
    assert shares["Disc space narrowing"] > shares.get("Other lesions", 0.0)
    normal_images = table.groupby("image_id")["lesion_type"].apply(lambda s: (s == NO_FINDING).all())
    assert 0.08 <= normal_images.mean() <= 0.35


def test_only_requested_lesion_types_are_drawn(tmp_path):
    csv_path = generate_xray_dataset(
        tmp_path, 6, 1, image_size=SIZE, class_frequencies={"Surgical implant": 1.0}, normal_fraction=0.0
    )
    assert set(_boxed(_read(csv_path))["lesion_type"]) == {"Surgical implant"}


def test_implant_boxes_are_brighter_than_the_same_region_without_implant(tmp_path):
    implants = generate_xray_dataset(
        tmp_path / "implant",
        4,
        2,
        image_size=SIZE,
        class_frequencies={"Surgical implant": 1},
        normal_fraction=0,
    )
    normals = generate_xray_dataset(tmp_path / "normal", 4, 2, image_size=SIZE, normal_fraction=1.0)
    for row in _boxed(_read(implants)).itertuples():
        region = np.s_[row.ymin : row.ymax, row.xmin : row.xmax]
        with_implant = _pixels(implants, row.image_id)[region]
        without = _pixels(normals, row.image_id)[region]
        assert (with_implant >= 250).mean() > 0.05
        assert (with_implant >= 250).mean() > 3 * (without >= 250).mean()


@pytest.mark.parametrize("kind", ["Osteophytes", "Foraminal stenosis", "Surgical implant", "Other lesions"])
def test_drawn_lesions_change_pixels_only_inside_their_boxes(kind):
    frequencies = {name: float(name == kind) for name in LESION_TYPES}
    for seed in range(3):
        patient = xray._plan_patient(np.random.default_rng(seed), SIZE, frequencies, 0.0)
        with_lesions, truths = xray._render_image(patient, np.random.default_rng(100 + seed), SIZE)
        bare, _ = xray._render_image(xray.Patient(patient.spine, []), np.random.default_rng(100 + seed), SIZE)
        changed = np.abs(with_lesions.astype(int) - bare.astype(int)) > 25
        assert changed.any()
        inside = np.zeros_like(changed)
        for _, (x0, y0, x1, y1), _ in truths:
            inside[max(int(y0) - 3, 0) : int(y1) + 4, max(int(x0) - 3, 0) : int(x1) + 4] = True
        assert not (changed & ~inside).any()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"n_images": 0}, "n_images"),
        ({"n_images": -3}, "n_images"),
        ({"class_frequencies": {"Fracture": 1.0}}, "class_frequencies"),
        ({"class_frequencies": {"Osteophytes": -0.1}}, "class_frequencies"),
        ({"class_frequencies": {"Osteophytes": 0.0}}, "class_frequencies"),
        ({"normal_fraction": 1.5}, "normal_fraction"),
        ({"n_readers": 4}, "n_readers"),
        ({"image_size": 16}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_raise_input_error(tmp_path, kwargs, named):
    with pytest.raises(InputError, match=re.escape(named)):
        generate_xray_dataset(tmp_path / "out", **{"n_images": 2, **kwargs})
    assert not (tmp_path / "out").exists()
