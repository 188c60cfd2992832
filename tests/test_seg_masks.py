"""Mask import (both real formats, with stand-ins written here), bad masks, and export."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from spinedx.errors import InputError
from spinedx.io.masks import (
    CANAL,
    DISC,
    IGNORE,
    MRI_SEG_SMALL_MAPPING,
    SEG_LABELS,
    VERTEBRA,
    read_colour_mask,
    read_index_mask,
    vertebral_bodies,
    write_label_nifti,
    write_label_png,
    write_label_table,
)
from spinedx.tasks.spine_seg.data import DISC_VERTEBRA_INDEX, VERTEBRA_COLOUR, detect_kind, load_seg_source
from test_cli_bad_input import assert_clean_error, spinedx

RED, GREEN = (255, 0, 0), (0, 255, 0)


def _grey(path, shape=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)


def _index_source(root):
    """mri-seg-small stand-in: one full mask, one with discs only, one empty."""
    for name in ("0", "1", "2"):
        _grey(root / "images" / f"{name}.png")
    full = np.zeros((32, 32), np.uint8)
    full[4:10, 10:20], full[10:13, 10:20] = 2, 1  # vertebra, disc in its convention
    discs_only = np.where(full == 1, 1, 0).astype(np.uint8)
    (root / "masks").mkdir()
    for name, mask in (("0", full), ("1", discs_only), ("2", np.zeros((32, 32), np.uint8))):
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def _colour_source(root, noisy=True):
    """spider-vertebra-masks stand-in: two patients, colour-coded vertebrae with posterior elements."""
    (root / "masks").mkdir(parents=True)
    for name in ("100_3", "100_7", "200_5"):
        _grey(root / "images" / f"{name}.png")
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[2:10, 4:14], rgb[2:6, 20:24] = RED, RED  # body + posterior element of one vertebra
        rgb[12:20, 4:14] = GREEN
        if noisy:  # lossy-compression noise on the colours
            rgb = np.clip(rgb.astype(int) + np.random.default_rng(1).integers(-12, 13, rgb.shape), 0, 255)
            rgb[rgb.sum(axis=2) < 40] = 0
        Image.fromarray(rgb.astype(np.uint8)).save(root / "masks" / f"{name}.png")


def test_index_masks_are_remapped_and_partial_masks_marked(tmp_path):
    _index_source(tmp_path / "small")
    assert detect_kind(tmp_path / "small") == DISC_VERTEBRA_INDEX
    samples = load_seg_source(tmp_path / "small")
    assert [s.image_id for s in samples] == ["0", "1"]  # the empty mask is skipped
    full, discs_only = samples
    assert full.labelled == (VERTEBRA, DISC) and discs_only.labelled == (DISC,)
    assert (full.labels[4:10, 10:20] == VERTEBRA).all() and (full.labels[10:13, 10:20] == DISC).all()
    assert full.group != discs_only.group  # patients unknown: one group per image


def test_colour_masks_keep_vertebral_bodies_and_group_by_patient(tmp_path):
    _colour_source(tmp_path / "spider")
    assert detect_kind(tmp_path / "spider") == VERTEBRA_COLOUR
    samples = load_seg_source(tmp_path / "spider")
    assert [s.group for s in samples] == ["spider/100", "spider/100", "spider/200"]
    labels = samples[0].labels
    assert (labels[2:10, 4:14] == VERTEBRA).all() and (labels[12:20, 4:14] == VERTEBRA).all()
    assert (labels[2:6, 20:24] == IGNORE).all()  # posterior element: no supervision
    assert samples[0].labelled == (VERTEBRA,)


def test_vertebral_bodies_keeps_largest_piece_per_instance():
    instances = np.zeros((10, 10), np.uint8)
    instances[0:4, 0:4], instances[0:2, 8:10], instances[6:9, 0:3] = 1, 1, 2
    labels = vertebral_bodies(instances)
    assert (labels[0:4, 0:4] == VERTEBRA).all() and (labels[0:2, 8:10] == IGNORE).all()
    assert (labels[6:9, 0:3] == VERTEBRA).all() and labels[5, 5] == 0


def test_unknown_colour_and_wrong_size_are_input_errors(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[2:5, 2:5] = (90, 40, 160)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(InputError, match=r"odd\.png: colour\(s\) \(90, 40, 160\)"):
        read_colour_mask(tmp_path / "odd.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match=r"small\.png: mask size 16x16 does not match its image 20x16"):
        read_index_mask(tmp_path / "small.png", MRI_SEG_SMALL_MAPPING, shape=(16, 20))
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "seven.png")
    with pytest.raises(InputError, match=r"seven\.png: pixel value\(s\) \[7\]"):
        read_index_mask(tmp_path / "seven.png", MRI_SEG_SMALL_MAPPING)


def test_cli_bad_mask_exits_2(tmp_path):
    root = tmp_path / "bad"
    _colour_source(root, noisy=False)
    rgb = np.array(Image.open(root / "masks" / "100_3.png"))
    rgb[0, 0] = (90, 40, 160)
    Image.fromarray(rgb).save(root / "masks" / "100_3.png")
    weights = tmp_path / "model.pt"
    from spinedx.tasks.spine_seg.network import build_spine_segmenter, save_segmenter

    save_segmenter(
        weights, build_spine_segmenter((4, 8), 0), {"channels": [4, 8], "num_res_units": 0, "input_size": 32}
    )
    result = spinedx("evaluate-seg", weights, "--data", root, "--out", tmp_path / "o")
    assert_clean_error(result, "100_3.png: colour(s) (90, 40, 160)")


def test_export_png_nifti_and_label_table(tmp_path):
    import SimpleITK as sitk

    labels = np.zeros((12, 10), np.uint8)
    labels[2:4, 3:7], labels[5:6, 3:7], labels[2:9, 8:9] = VERTEBRA, DISC, CANAL
    write_label_png(tmp_path / "masks.png", labels)
    assert (np.array(Image.open(tmp_path / "masks.png")) == labels).all()
    write_label_nifti(tmp_path / "masks.nii.gz", labels, (0.5, 0.8))
    image = sitk.ReadImage(str(tmp_path / "masks.nii.gz"))
    assert (sitk.GetArrayFromImage(image)[0] == labels).all()
    assert image.GetSpacing()[:2] == pytest.approx((0.8, 0.5))
    write_label_table(tmp_path / "labels.json")
    assert json.loads((tmp_path / "labels.json").read_text()) == {str(k): v for k, v in SEG_LABELS.items()}


@pytest.mark.skipif(not (SHARED_DATA / "mri-seg-small").is_dir(), reason="shared data absent")
def test_real_mri_seg_small_imports():
    samples = load_seg_source(SHARED_DATA / "mri-seg-small")
    assert len(samples) == 17  # 20 minus the three empty masks
    assert all(
        s.labels.shape == (256, 256) and set(np.unique(s.labels)) <= {0, VERTEBRA, DISC} for s in samples
    )


@pytest.mark.skipif(not (SHARED_DATA / "spider-vertebra-masks").is_dir(), reason="shared data absent")
def test_real_spider_vertebra_masks_import():
    samples = load_seg_source(SHARED_DATA / "spider-vertebra-masks")
    assert len(samples) == 36 and len({s.group for s in samples}) == 15
    assert all(set(np.unique(s.labels)) <= {0, VERTEBRA, IGNORE} for s in samples)
