"""Segmentation metrics against hand-computed values on toy masks, empty masks included."""

import numpy as np
import pytest

from spinedx.evaluation.segmentation import METRICS, image_metrics, summarize_images
from spinedx.io.masks import DISC, IGNORE, VERTEBRA


def test_toy_masks_match_hand_computed_values():
    reference = np.zeros((8, 8), np.uint8)
    reference[2:6, 2:6] = DISC  # 16 px
    prediction = np.zeros((8, 8), np.uint8)
    prediction[2:6, 2:5] = DISC  # 12 px, all inside
    disc = image_metrics(prediction, reference, [DISC], pixel_spacing_mm=(0.5, 2.0))[DISC]
    assert disc["dice"] == pytest.approx(2 * 12 / (12 + 16))
    assert disc["iou"] == pytest.approx(12 / 16)
    assert disc["precision"] == pytest.approx(1.0)
    assert disc["recall"] == disc["sensitivity"] == pytest.approx(12 / 16)
    assert disc["specificity"] == pytest.approx(1.0)
    assert disc["accuracy"] == pytest.approx(60 / 64)
    # The missed column lies one column (2 mm) from the predicted edge: distances in mm.
    assert disc["hd95"] == pytest.approx(2.0)
    assert 0.0 < disc["asd"] < 2.0


def test_empty_masks_give_defined_overlap_and_undefined_distances():
    empty = np.zeros((8, 8), np.uint8)
    both_empty = image_metrics(empty, empty, [VERTEBRA])[VERTEBRA]
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0
    assert both_empty["hd95"] is None and both_empty["asd"] is None and both_empty["precision"] is None
    predicted = empty.copy()
    predicted[1:3, 1:3] = VERTEBRA
    false_positive = image_metrics(predicted, empty, [VERTEBRA])[VERTEBRA]
    assert false_positive["dice"] == 0.0 and false_positive["hd95"] is None


def test_ignored_pixels_are_not_scored():
    reference = np.zeros((6, 6), np.uint8)
    reference[1:3, 1:3] = VERTEBRA
    reference[4:6, 4:6] = IGNORE
    prediction = np.zeros((6, 6), np.uint8)
    prediction[1:3, 1:3] = VERTEBRA
    prediction[4:6, 4:6] = VERTEBRA  # predicted where the reference has no label: no penalty
    assert image_metrics(prediction, reference, [VERTEBRA])[VERTEBRA]["dice"] == pytest.approx(1.0)


def test_summary_skips_unlabelled_classes_and_undefined_values():
    per_image = [
        {DISC: {"dice": 0.8, "hd95": 2.0}, VERTEBRA: {"dice": 0.9, "hd95": None}},
        {VERTEBRA: {"dice": 0.7, "hd95": 4.0}},
    ]
    per_image = [{c: {m: v.get(m) for m in METRICS} for c, v in entry.items()} for entry in per_image]
    summary = summarize_images(per_image, ["a", "b"], n_resamples=50)
    assert summary["disc"]["dice"]["n"] == 1 and summary["disc"]["dice"]["estimate"] == pytest.approx(0.8)
    assert summary["vertebra"]["dice"]["estimate"] == pytest.approx(0.8)
    assert summary["vertebra"]["hd95"] == {**summary["vertebra"]["hd95"], "estimate": 4.0, "n": 1}
    assert summary["vertebra"]["dice"]["lower"] <= 0.8 <= summary["vertebra"]["dice"]["upper"]
    assert "spinal_canal" not in summary
    assert summary["disc"]["precision"] == {"estimate": None, "lower": None, "upper": None, "n": 0}
