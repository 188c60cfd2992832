"""MRI disc localiser: detection metrics, box/level post-processing, training and CV on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import SPIDER
from spinedx.data.letterbox import letterbox, letterbox_geometry, normalize_intensity
from spinedx.evaluation.detection import (
    box_holding,
    box_iou,
    count_centres_found,
    count_detections,
    level_accuracy,
    match_boxes,
    precision,
    recall,
)
from spinedx.io.levels import level_name
from spinedx.models.registry import BUNDLED_DIR
from spinedx.tasks.disc_localization.model import NO_L5S1_WARNING, Calibration, DiscLocalizer
from spinedx.tasks.disc_localization.network import (
    INPUT_SIZE,
    L5S1,
    N_CLASSES,
    OTHER_DISC,
    UNKNOWN_LEVEL_DISC,
    build_disc_localizer,
    render_targets,
)

BUNDLED = BUNDLED_DIR / "disc_localizer.pt"


# --------------------------------------------------------------------------- metrics


def test_box_iou_hand_computed():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]]
    iou = box_iou(a, b)
    assert iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0, 25 / 100])
    assert box_iou([], b).shape == (0, 4)
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_match_boxes_one_to_one_and_threshold():
    ref = [[0, 0, 10, 10], [0, 20, 10, 30]]
    # pred 0 fits ref 0 best (IoU 90/110), pred 1 duplicates ref 0 less well (80/120),
    # pred 3 overlaps ref 1 too little (60/140 < 0.5), pred 2 fits ref 1 (80/120).
    pred = [[1, 0, 11, 10], [0, 2, 10, 12], [0, 22, 10, 32], [0, 24, 10, 34]]
    matches = match_boxes(pred, ref, 0.5)
    assert [(p, r) for p, r, _ in matches] == [(0, 0), (2, 1)]
    np.testing.assert_allclose([m[2] for m in matches], [90 / 110, 80 / 120])
    assert match_boxes(pred[3:], ref, 0.5) == []
    assert [(p, r) for p, r, _ in match_boxes(pred[3:], ref, 0.4)] == [(0, 1)]
    assert match_boxes([], ref) == []


def test_count_detections_and_pooled_metrics():
    ref = [[0, 0, 10, 10], [0, 20, 10, 30], [0, 40, 10, 50]]
    pred = [[0, 0, 10, 10], [0, 21, 10, 31], [50, 50, 60, 60]]
    counts = count_detections(pred, ref, [1, 3, 2], [1, 2, 3], 0.5)
    # pred 1 vs ref 1: overlap 9 x 10 = 90, union 110 -> 0.818 matched; pred 2 matches nothing.
    assert (counts.n_pred, counts.n_ref, counts.n_matched, counts.n_level_correct) == (3, 3, 2, 1)
    assert recall([2, 3], [3, 3]) == pytest.approx(5 / 6)
    assert precision([2, 3], [3, 4]) == pytest.approx(5 / 7)
    assert level_accuracy([1, 3], [2, 3]) == pytest.approx(4 / 5)
    with pytest.raises(ZeroDivisionError):
        recall([0], [0])
    empty = count_detections([], ref)
    assert (empty.n_pred, empty.n_matched) == (0, 0)


def test_tight_references_are_found_by_their_centre():
    # Tight references (no endplates) inside wider predictions: IoU (0.24, 0.4) would call them missed.
    ref = [[2, 3, 8, 7], [2, 23, 8, 27], [40, 40, 42, 42]]
    pred = [[0, 0, 10, 10], [0, 16, 10, 32], [0, 22, 10, 28]]
    assert count_detections(pred, ref).n_matched == 0
    counts = count_centres_found(pred, ref, [1, 2, 3], [1, 3, 4])
    # ref 1's centre (5, 25) lies in pred 1 and pred 2; pred 2's centre is nearer and carries label 3.
    assert (counts.n_pred, counts.n_ref, counts.n_matched, counts.n_level_correct) == (3, 3, 2, 2)
    assert box_holding(pred, 5, 25) == 2 and box_holding(pred, 50, 50) is None
    assert count_centres_found([], ref).n_matched == 0


# --------------------------------------------------------------------------- preprocessing


def test_letterbox_geometry_and_targets():
    pixels = np.linspace(0, 1000, 200 * 100, dtype=np.float32).reshape(200, 100)
    tensor, geometry = letterbox(pixels, 64)
    assert tensor.shape == (1, 1, 64, 64)
    assert (geometry.resized_h, geometry.resized_w) == (64, 32)
    assert geometry.offset_x == 16 and geometry.offset_y == 0
    assert float(tensor.min()) == 0.0 and float(tensor.max()) <= 1.0
    assert float(tensor[0, 0, :, :16].abs().max()) == 0.0  # padding
    u, v = geometry.to_net(np.array([0.0, 100.0]), np.array([0.0, 200.0]))
    np.testing.assert_allclose(u, [16, 48])
    np.testing.assert_allclose(v, [0, 64])
    x, y = geometry.to_input(u, v)
    np.testing.assert_allclose(x, [0, 100])
    np.testing.assert_allclose(y, [0, 200])

    target = render_targets(np.array([[20, 150, 80, 170], [20, 100, 80, 120]]), np.array([1, 2]), geometry)
    assert set(np.unique(target)) == {0, L5S1, OTHER_DISC}
    rows = np.nonzero((target == L5S1).any(axis=1))[0]
    assert rows.min() >= 48 and rows.max() < 54  # box rows 150..170 -> net 48..54.4
    unknown = render_targets(
        np.array([[20, 150, 80, 170], [20, 100, 80, 120]]), np.array([1, 2]), geometry, levels_known=False
    )
    np.testing.assert_array_equal(unknown, np.where(target > 0, UNKNOWN_LEVEL_DISC, 0))
    assert normalize_intensity(np.full((4, 4), 3.0)).max() == 0.0


def test_partial_level_loss_reads_a_disc_of_unknown_level_as_either_class():
    from spinedx.tasks.disc_localization.train import PartialLevelLoss

    loss = PartialLevelLoss()
    targets = torch.zeros(1, 8, 8, dtype=torch.long)
    targets[0, 2:4, 2:6] = UNKNOWN_LEVEL_DISC
    confident = torch.full((1, N_CLASSES, 8, 8), -9.0)
    confident[:, 0] = 9.0
    as_l5s1, as_other = confident.clone(), confident.clone()
    as_l5s1[0, :, 2:4, 2:6] = torch.tensor([-9.0, 9.0, -9.0])[:, None, None]
    as_other[0, :, 2:4, 2:6] = torch.tensor([-9.0, -9.0, 9.0])[:, None, None]
    # Either class is right for that disc: the same loss, near zero; calling it background is not.
    assert float(loss(as_l5s1, targets)) == pytest.approx(float(loss(as_other, targets)), abs=1e-4)
    assert float(loss(as_l5s1, targets)) < 0.1 and float(loss(confident, targets)) > 1.0
    # With the level known, the wrong class costs.
    known = torch.where(targets > 0, L5S1, 0)
    assert float(loss(as_other, known)) > 0.5 > float(loss(as_l5s1, known))


# --------------------------------------------------------------------------- post-processing


class _Oracle(nn.Module):
    """Returns fixed logits (a class map painted as confident one-hot scores), whatever the input."""

    def __init__(self, classes: np.ndarray):
        super().__init__()
        onehot = torch.nn.functional.one_hot(torch.from_numpy(classes), N_CLASSES).permute(2, 0, 1)
        self.register_buffer("logits", 10.0 * onehot.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None].expand(x.shape[0], -1, -1, -1)


HEIGHT, WIDTH, SIZE = 300, 200, 128


def _column(n: int = 5) -> np.ndarray:
    """``n`` disc boxes stacked bottom-up, 40 px apart, like a lumbar spine (index 0 = lowest)."""
    return np.array([[60, 250 - 40 * i, 120, 270 - 40 * i] for i in range(n)], dtype=np.float64)


def _oracle_localizer(boxes: np.ndarray, labels: list[int]) -> DiscLocalizer:
    from spinedx.tasks.disc_localization.model import LocalizerSettings

    geometry = letterbox_geometry(HEIGHT, WIDTH, SIZE)
    classes = render_targets(boxes, np.array(labels), geometry)
    return DiscLocalizer(_Oracle(classes), LocalizerSettings(input_size=SIZE))


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((HEIGHT, WIDTH)).astype(np.float32)


def test_detect_bottom_up_with_levels_and_calibrated_boxes():
    boxes = _column(5)
    localizer = _oracle_localizer(boxes, [1, 2, 3, 4, 5])
    calibration = localizer.calibrate([_image()], [boxes])
    assert calibration.scale_x == pytest.approx(1.0, abs=0.15)
    assert calibration.scale_y == pytest.approx(1.0, abs=0.25)
    detections, warnings = localizer.detect(_image())
    assert warnings == []
    assert [d.ivd_label for d in detections] == [1, 2, 3, 4, 5]
    assert [d.level for d in detections] == ["L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2"]
    centres = [0.5 * (d.box[1] + d.box[3]) for d in detections]
    assert centres == sorted(centres, reverse=True)  # bottom-up
    iou = box_iou([d.box for d in detections], boxes)
    assert np.diag(iou).min() > 0.75
    assert all(0.9 < d.score <= 1.0 for d in detections)
    localizer.settings.smooth_sigma = 1.0  # smoothing before thresholding keeps clean blobs as they are
    assert [d.ivd_label for d in localizer.detect(_image())[0]] == [1, 2, 3, 4, 5]


def test_detect_without_l5s1_warns_and_counts_from_lowest():
    boxes = _column(4)
    detections, warnings = _oracle_localizer(boxes, [3, 4, 5, 6]).detect(_image())
    assert [d.ivd_label for d in detections] == [1, 2, 3, 4]
    assert NO_L5S1_WARNING in warnings


def test_detect_skips_a_label_across_a_missing_disc_and_ignores_blobs_below_l5s1():
    boxes = _column(6)
    kept = [0, 1, 3, 4, 5]  # disc 3 (L3/L4) not seen
    extra = np.array([[60, 285, 120, 298]])  # a blob below L5/S1
    localizer = _oracle_localizer(np.vstack([extra, boxes[kept]]), [2, 1, 2, 4, 5, 6])
    detections, warnings = localizer.detect(_image())
    assert [d.ivd_label for d in detections] == [1, 2, 4, 5, 6]
    assert [d.level for d in detections] == [level_name(k) for k in (1, 2, 4, 5, 6)]
    assert any("below L5/S1 ignored" in w for w in warnings)
    assert any("gap" in w for w in warnings)


def test_detect_nothing_and_bad_input():
    from spinedx.errors import InputError

    localizer = _oracle_localizer(np.zeros((0, 4)), [])
    assert localizer.detect(_image()) == ([], ["no intervertebral disc found"])
    with pytest.raises(InputError):
        localizer.detect(np.zeros((3, 4, 5)))


def test_save_and_load_round_trip(tmp_path):
    from spinedx.tasks.disc_localization.model import LocalizerSettings

    torch.manual_seed(0)
    model = build_disc_localizer((4, 8, 16), num_res_units=1)
    settings = LocalizerSettings(input_size=64, model={"channels": [4, 8, 16], "num_res_units": 1})
    localizer = DiscLocalizer(model, settings, Calibration(1.1, 1.3, 0.01, -0.02), {"note": "x"})
    path = localizer.save(tmp_path / "loc.pt")
    again = DiscLocalizer.load(path)
    assert again.calibration == localizer.calibration
    assert again.meta == {"note": "x"}
    assert again.settings.shrink == localizer.settings.shrink
    image = _image()
    np.testing.assert_allclose(again.probabilities(image)[0], localizer.probabilities(image)[0], atol=2e-2)
    bad = tmp_path / "bad.pt"
    torch.save({"format": "other"}, bad)
    from spinedx.errors import InputError

    with pytest.raises(InputError):
        DiscLocalizer.load(bad)
    state = torch.load(path, weights_only=False)
    state["settings"]["model"]["channels"] = [4, 8, 32]
    torch.save(state, bad)
    with pytest.raises(InputError, match="damaged"):
        DiscLocalizer.load(bad)


# --------------------------------------------------------------------------- training and CV


@pytest.fixture(scope="module")
def tiny_mri(tmp_path_factory) -> Path:
    from spinedx.synth.mri import generate_mri_dataset

    out = tmp_path_factory.mktemp("synth-mri")
    return generate_mri_dataset(out, n_patients=4, seed=3, image_size=(128, 128), pixel_spacing_mm=2.0)


def _tiny_config(root: Path, **extra):
    from spinedx.tasks.disc_localization.train import LocalizerConfig

    values = dict(
        data_root=root,
        image_size=64,
        channels=(8, 16, 32),
        epochs=2,
        batch_size=4,
        folds=2,
        threads=1,
        bootstrap_resamples=20,
    )
    values.update(extra)
    return LocalizerConfig(**values)


def test_cross_validation_tiny_run_writes_metrics_model_and_resumes(tiny_mri, tmp_path):
    from spinedx.errors import InputError
    from spinedx.tasks.disc_localization.train import cross_validate_localizer
    from spinedx.training.checkpoints import load_checkpoint

    torch.set_num_threads(1)
    config = _tiny_config(tiny_mri)
    out = tmp_path / "cv"
    metrics = cross_validate_localizer(config, out, log=lambda _: None)
    saved = json.loads((out / "cv_metrics.json").read_text())
    assert saved["pooled"]["n_images"] == 8 and saved["pooled"]["n_patients"] == 4
    assert len(saved["folds"]) == 2
    for name in ("recall", "precision", "level_accuracy"):
        assert set(saved["pooled"][name]) == {"estimate", "ci95"}
    assert saved["folds"][0]["train_seconds"] >= 0
    assert metrics["pooled"]["n_ref"] == saved["pooled"]["n_ref"] > 0
    assert load_checkpoint(out / "fold_0" / "last.pt")["epoch"] == 2
    # Every held-out patient was tested exactly once, and never trained on in its fold.
    results = [json.loads((out / f"fold_{k}" / "result.json").read_text()) for k in range(2)]
    tested = [set(r["test_patients"]) for r in results]
    assert not tested[0] & tested[1] and len(tested[0] | tested[1]) == 4

    localizer = DiscLocalizer.load(out / "disc_localizer.pt")
    pixels = np.asarray(Image.open(tiny_mri / "images" / "1_t2.png"), dtype=np.float32)
    detections, warnings = localizer.detect(pixels / 255.0)
    assert isinstance(warnings, list)
    labels = [d.ivd_label for d in detections]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)
    centres = [0.5 * (d.box[1] + d.box[3]) for d in detections]
    assert centres == sorted(centres, reverse=True)

    # A second call resumes: nothing is retrained, the metrics are the same.
    stamp = (out / "fold_0" / "last.pt").stat().st_mtime_ns
    again = cross_validate_localizer(config, out, log=lambda _: None, train_final=False)
    assert (out / "fold_0" / "last.pt").stat().st_mtime_ns == stamp
    timing = "mean_detect_seconds"
    assert {k: v for k, v in again["pooled"].items() if k != timing} == {
        k: v for k, v in metrics["pooled"].items() if k != timing
    }
    with pytest.raises(InputError, match="different config"):
        cross_validate_localizer(_tiny_config(tiny_mri, epochs=3), out, log=lambda _: None)


def test_localizer_trains_on_both_cohorts_without_the_report_patients(tiny_mri, lumbar515_cohort, tmp_path):
    from spinedx.io.lumbar515 import read_lumbar515
    from spinedx.tasks.disc_localization.train import cross_validate_localizer, load_training_series

    torch.set_num_threads(1)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"spider/1": "report", "lumbar515/2": "report", "lumbar515/3": "fit"}))
    config = _tiny_config(tiny_mri, lumbar515_root=lumbar515_cohort, report_split=split)
    records = load_training_series(config)
    patients = {r.patient for r in records}
    assert "1" not in patients and "lumbar515/2" not in patients
    assert {"2", "lumbar515/1", "lumbar515/3"} <= patients
    # A lumbar515 box is widened about its centre to SPIDER's convention (disc and endplates).
    record = next(r for r in records if r.image_id == "lumbar515/0001_t2")
    assert not record.levels_known and all(r.levels_known for r in records if r.cohort == "spider")
    tight = read_lumbar515(lumbar515_cohort).discs.query("image_id == '0001_t2'")
    tight_box = tight[["xmin", "ymin", "xmax", "ymax"]].to_numpy()[0]
    width, height = config.lumbar515_box_scale
    np.testing.assert_allclose(record.boxes[0, 2] - record.boxes[0, 0], width * (tight_box[2] - tight_box[0]))
    np.testing.assert_allclose(
        record.boxes[0, 3] - record.boxes[0, 1], height * (tight_box[3] - tight_box[1])
    )
    np.testing.assert_allclose(record.boxes[0].reshape(2, 2).mean(0), tight_box.reshape(2, 2).mean(0))

    metrics = cross_validate_localizer(config, tmp_path / "cv", log=lambda _: None, train_final=False)
    assert set(metrics["by_cohort"]) == {"spider", "lumbar515"}
    assert metrics["by_cohort"]["lumbar515"]["n_patients"] == 5
    assert metrics["pooled"]["n_images"] == len(records)


def test_training_resumes_from_last_epoch(tiny_mri, tmp_path):
    from spinedx.tasks.disc_localization.train import train_localizer
    from spinedx.training.checkpoints import load_checkpoint

    torch.set_num_threads(1)
    logs: list[str] = []
    train_localizer(_tiny_config(tiny_mri, epochs=1, max_images=4), tmp_path, log=logs.append)
    state = load_checkpoint(tmp_path / "final" / "last.pt")
    assert state["epoch"] == 1
    # Same data, the checkpoint says done: no epoch is run again.
    logs.clear()
    train_localizer(_tiny_config(tiny_mri, epochs=1, max_images=4), tmp_path, log=logs.append)
    assert any("resumed after epoch 1" in line for line in logs)
    assert not any("epoch 1/1" in line for line in logs)


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.skipif(not (SPIDER / "discs.csv").is_file(), reason="shared/data/spider-sagittal not present")
@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled disc_localizer.pt not present")
def test_bundled_localizer_on_real_slices():
    from spinedx.tasks.disc_localization.train import load_boxed_series

    torch.set_num_threads(1)
    localizer = DiscLocalizer.load(BUNDLED)
    assert localizer.settings.input_size == INPUT_SIZE
    records = load_boxed_series(SPIDER, max_images=3)
    matched = total = right = 0
    for record in records:
        detections, _ = localizer.detect(record.pixels)
        counts = count_detections(
            [d.box for d in detections],
            record.boxes,
            [d.ivd_label for d in detections],
            record.labels.tolist(),
        )
        matched, total, right = (
            matched + counts.n_matched,
            total + counts.n_ref,
            right + counts.n_level_correct,
        )
        assert [d.ivd_label for d in detections] == sorted(d.ivd_label for d in detections)
    # Seen in training, so this checks the plumbing (reading, letterbox, boxes back in input pixels).
    assert matched / total >= 0.9 and right / matched >= 0.9


def test_synthetic_series_join_training_only(tiny_mri, tmp_path):
    from spinedx.tasks.disc_localization.train import train_localizer

    torch.set_num_threads(1)
    config = _tiny_config(tiny_mri, epochs=1, max_images=2, use_synthetic=True, synthetic_root=tiny_mri)
    localizer = train_localizer(config, tmp_path, log=lambda _: None)
    assert localizer.meta["train_images"] == 2 + 8


def _blob(cx, cy, w=60.0, h=20.0, mass=100.0):
    from spinedx.tasks.disc_localization.model import _Blob

    return _Blob(cx=cx, cy=cy, w=w, h=h, score=0.9, l5s1=0.0, l5s1_mass=0.0, mass=mass)


def test_clean_drops_duplicates_and_blobs_off_the_spine():
    localizer = _oracle_localizer(np.zeros((0, 4)), [])
    spine = [_blob(100 + 2 * i, 260 - 40 * i) for i in range(6)]
    inside = _blob(100, 262, w=8, h=12, mass=5)  # a sliver inside the lowest disc's box
    off = _blob(20, 140)  # far anterior of the spine
    warnings: list[str] = []
    kept = localizer._clean([*spine, inside, off], warnings)
    assert sorted(b.cy for b in kept) == sorted(b.cy for b in spine)
    assert any("overlapping" in w for w in warnings) and any("off the spine" in w for w in warnings)
    # Neighbours whose boxes just touch are both kept.
    assert len(localizer._clean([_blob(100, 100), _blob(100, 121)], [])) == 2


def test_disc_cut_by_top_edge_is_left_out():
    from spinedx.tasks.disc_localization.model import DiscDetection

    localizer = _oracle_localizer(np.zeros((0, 4)), [])
    detections = [
        DiscDetection((0, 200 - 40 * i, 60, 220 - 40 * i), 0.9, i + 1, level_name(i + 1)) for i in range(5)
    ]
    cut = DiscDetection((0, 0, 60, 6), 0.6, 6, level_name(6))
    whole = DiscDetection((0, 0, 60, 18), 0.9, 6, level_name(6))
    warnings: list[str] = []
    assert localizer._drop_cut_at_top([*detections, cut], warnings) == detections
    assert warnings == ["1 disc(s) cut by the top edge of the image left out"]
    assert localizer._drop_cut_at_top([*detections, whole], []) == [*detections, whole]


def test_l5s1_call_far_up_the_spine_is_not_an_anchor():
    boxes = _column(6)
    detections, warnings = _oracle_localizer(boxes, [2, 2, 2, 2, 2, 1]).detect(_image())
    assert [d.ivd_label for d in detections] == [1, 2, 3, 4, 5, 6]
    assert NO_L5S1_WARNING in warnings
