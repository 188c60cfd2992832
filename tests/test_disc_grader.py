"""Per-disc MRI grader: metrics, calibration, crops, tiny CV/training on synthetic data, grade() output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from conftest import SPIDER
from spinedx.errors import InputError
from spinedx.evaluation.calibration import expected_calibration_error
from spinedx.evaluation.grading import (
    binary_task_metrics,
    multiclass_metrics,
    ordinal_metrics,
    quadratic_kappa,
    sensitivity,
    sensitivity_at_specificity,
    specificity,
    youden_threshold,
)
from spinedx.models.calibration import LogitStack, PlattScaler, TemperatureScaler, softmax_probabilities
from spinedx.models.registry import BUNDLED_DIR
from spinedx.tasks.disc_grading import train as training
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_grading.network import (
    BINARY_TASKS,
    GRADE_TASKS,
    OUTPUT_ORDER,
    REGION_COLS,
    REGION_ROWS,
    DiscGraderNet,
    disc_crops,
    level_index,
    padded_size,
    pfirrmann_grade,
    pfirrmann_probabilities,
    region_descriptors,
    region_masks,
    view_crops,
)
from spinedx.tasks.disc_grading.train import (
    CV_METRICS,
    OOF_PREDICTIONS,
    GraderConfig,
    cross_validate_grader,
    fit_grader,
    level_baseline,
    load_grading_data,
    patient_folds,
    train_grader,
)
from spinedx.training import loop

BUNDLED = BUNDLED_DIR / "disc_grader.pt"


# --------------------------------------------------------------------------- metrics


def test_quadratic_kappa_hand_computed():
    # Observed: one disagreement 1->2 (weight 1/4); expected weighted disagreement 1.25 (of N = 4).
    assert quadratic_kappa([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(1 - 0.25 / 1.25)
    assert quadratic_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], labels=[1, 2, 3, 4, 5]) == pytest.approx(1.0)
    result = ordinal_metrics([1, 1, 2, 3], [1, 2, 2, 3], labels=[1, 2, 3], n_resamples=0)
    assert result["kappa_quadratic"]["estimate"] == pytest.approx(0.8)
    assert result["accuracy"]["estimate"] == pytest.approx(0.75)
    assert result["balanced_accuracy"]["estimate"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result["mae"]["estimate"] == pytest.approx(0.25)
    assert result["within_one"]["estimate"] == pytest.approx(1.0)
    assert math.isnan(result["kappa_quadratic"]["lower"])  # no resamples, no interval


def test_binary_metrics_hand_computed():
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.6, 0.9])
    assert sensitivity(y, (s >= 0.5).astype(int)) == pytest.approx(1.0)
    assert specificity(y, (s >= 0.5).astype(int)) == pytest.approx(0.75)
    assert sensitivity_at_specificity(y, s, 0.75) == pytest.approx(1.0)
    assert sensitivity_at_specificity(y, s, 0.9) == pytest.approx(0.5)
    # Youden: J = 0.5 at thresholds 0.8 and 0.35; ties go to the higher one.
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)
    assert youden_threshold([1, 1], [0.2, 0.3]) == 0.5
    with pytest.raises(ZeroDivisionError):
        sensitivity([0, 0], [0, 1])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    out = binary_task_metrics(y, s, threshold=0.5, groups=groups, n_resamples=200, seed=1)
    # AUROC: 7 of 8 positive/negative pairs ordered right.
    assert out["auroc"]["estimate"] == pytest.approx(7 / 8)
    assert out["sensitivity"]["estimate"] == pytest.approx(1.0)
    assert out["specificity"]["estimate"] == pytest.approx(0.75)
    assert out["auroc"]["lower"] <= out["auroc"]["estimate"] <= out["auroc"]["upper"]
    assert (out["n"], out["n_positive"], out["threshold"]) == (6, 2, 0.5)
    # Per-sample thresholds (one per CV fold) travel with their samples.
    per_sample = binary_task_metrics(y, s, threshold=np.array([0.5] * 3 + [0.95] * 3), n_resamples=0)
    assert per_sample["sensitivity"]["estimate"] == pytest.approx(0.0)
    assert per_sample["specificity"]["estimate"] == pytest.approx(1.0)
    modic = multiclass_metrics([0, 0, 2, 2], [0, 2, 2, 2], n_resamples=0)
    assert modic["accuracy"]["estimate"] == pytest.approx(0.75)
    assert modic["balanced_accuracy"]["estimate"] == pytest.approx(0.75)


def test_expected_calibration_error_hand_computed():
    # Four bins with one sample each: (0.05 + 0.85 + 0.05 + 0.15) / 4.
    assert expected_calibration_error([0.05, 0.15, 0.95, 0.85], [0, 1, 1, 1]) == pytest.approx(0.275)
    # Bin [0.2, 0.3): mean 0.225 vs 1/2 positive, 2 of 3 samples; bin [0.9, 1]: 0.9 vs 1.
    assert expected_calibration_error([0.2, 0.25, 0.9], [0, 1, 1]) == pytest.approx(
        2 / 3 * 0.275 + 1 / 3 * 0.1
    )
    # Multi-class: top-label confidence 0.6 (right) and 0.7 (wrong).
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert expected_calibration_error(probs, [0, 0]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.7)


def test_calibration_reduces_ece_on_a_miscalibrated_example():
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    overconfident = 3.0 * z + 1.0  # the true log-odds is z
    before = expected_calibration_error(1 / (1 + np.exp(-overconfident)), y)
    scaler = PlattScaler.fit(overconfident, y)
    after = expected_calibration_error(scaler.apply(overconfident), y)
    assert before > 0.1
    assert after < 0.03
    assert scaler.a == pytest.approx(1 / 3, abs=0.05)
    assert PlattScaler.fit([0.1, 0.2], [1, 1]) == PlattScaler()  # one class: identity

    logits = rng.normal(size=(3000, 4)) * 2
    true_probs = softmax_probabilities(logits)
    labels = np.array([rng.choice(4, p=p) for p in true_probs])
    sharp = logits * 4.0
    temperature = TemperatureScaler.fit(sharp, labels)
    assert temperature.temperature == pytest.approx(4.0, rel=0.15)
    assert expected_calibration_error(temperature.apply(sharp), labels) < 0.5 * expected_calibration_error(
        softmax_probabilities(sharp), labels
    )


def test_logit_stack_recovers_the_weight_of_each_source_and_checks_its_input():
    rng = np.random.default_rng(1)
    sources = rng.normal(size=(6000, 2))
    y = (rng.random(6000) < 1 / (1 + np.exp(-(0.5 * sources[:, 0] + 2.0 * sources[:, 1] - 1.0)))).astype(int)
    stack = LogitStack.fit(sources, y)
    assert stack.weights == pytest.approx([0.5, 2.0], abs=0.15) and stack.intercept == pytest.approx(
        -1.0, abs=0.15
    )
    assert LogitStack(**stack.as_dict()).apply(sources[:3]) == pytest.approx(stack.apply(sources[:3]))
    with pytest.raises(InputError, match="single class"):
        LogitStack.fit(sources, np.ones(6000))
    with pytest.raises(InputError, match=r"expected \(N, 2\) logits"):
        stack.apply(sources[:, :1])


def test_level_baseline_is_training_prevalence_per_level():
    train = pd.DataFrame(
        {
            "ivd_label": [1, 1, 1, 1, 2, 2],
            **{task: [1, 1, 0, 0, 0, 0] for task in BINARY_TASKS},
            "pfirrmann": [4, 4, 5, 3, 2, 2],
            "modic": [0, 2, 2, 2, 0, 0],
        }
    )
    test = pd.DataFrame({"ivd_label": [1, 2, 7]})
    out = level_baseline(train, test)
    np.testing.assert_allclose(out["binary"][:, 0], [0.5, 0.0, 2 / 6])  # level 7 unseen: overall
    np.testing.assert_allclose(out["pfirrmann"][0], [0, 0, 0.25, 0.5, 0.25])
    np.testing.assert_allclose(out["modic"][1], [1, 0, 0, 0])
    assert pfirrmann_grade(out["pfirrmann"][:2], "argmax").tolist() == [4, 2]


# --------------------------------------------------------------------------- model pieces


def test_pfirrmann_ordinal_outputs_and_decoding():
    logits = torch.tensor([[5.0, 3.0, -1.0, -4.0], [-6.0, -7.0, -8.0, -9.0], [9.0, 8.0, 7.0, 6.0]])
    probs = pfirrmann_probabilities(logits).numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    assert pfirrmann_grade(probs, "argmax").tolist() == [3, 1, 5]
    assert pfirrmann_grade(np.array([[0, 0.5, 0, 0.5, 0]]), "expected").tolist() == [3]
    with pytest.raises(InputError):
        pfirrmann_grade(probs, "median")
    assert set(GRADE_TASKS) == set(OUTPUT_ORDER)
    assert level_index([0, 1, 9, 14, -2]).tolist() == [0, 1, 9, 9, 0]


def test_crops_view_and_network_shapes():
    image = np.zeros((120, 160), dtype=np.float32)
    image[50:70, 60:100] = 1.0
    crops = disc_crops(image * 300, [(60, 50, 100, 70), (0, 0, 20, 10)], size=32, margin=0.3, pad=1.25)
    assert crops.shape == (2, padded_size(32, 1.25), padded_size(32, 1.25)) == (2, 40, 40)
    assert crops.dtype == np.float32 and crops.min() >= 0 and crops.max() <= 1
    assert disc_crops(image, [], 32, 0.3).shape == (0, 40, 40)
    with pytest.raises(InputError):
        disc_crops(np.zeros((2, 3, 4)), [(0, 0, 1, 1)], 32, 0.3)
    tensor = torch.from_numpy(crops)
    view = view_crops(tensor, 32)
    assert torch.equal(view[:, 0], tensor[:, 4:36, 4:36])
    augmented = view_crops(tensor, 32, generator=torch.Generator().manual_seed(0), rotation_deg=10, scale=0.1)
    assert augmented.shape == (2, 1, 32, 32)
    # An identity affine samples exactly the centre view.
    still = view_crops(tensor, 32, rotation_deg=1e-9)
    torch.testing.assert_close(still, view, atol=1e-5, rtol=0)

    masks = region_masks(32, margin=0.3)
    assert masks.shape == (len(REGION_ROWS) * len(REGION_COLS), 32, 32)
    torch.testing.assert_close(masks.sum((1, 2)), torch.ones(len(masks)))
    nucleus = masks[REGION_ROWS.index(0.0) * len(REGION_COLS) + REGION_COLS.index(0.0)]
    rows, cols = torch.nonzero(nucleus, as_tuple=True)
    assert rows.float().mean() == pytest.approx(15.5, abs=0.6) and cols.float().mean() == pytest.approx(
        15.5, abs=0.6
    )
    flat = region_descriptors(torch.full((2, 1, 32, 32), 0.25), masks)
    assert flat.shape == (2, 2 * len(masks) + 2)
    torch.testing.assert_close(flat[:, : len(masks)], torch.full((2, len(masks)), 0.25))
    assert flat[:, len(masks) : 2 * len(masks)].max() < 0.01

    net = DiscGraderNet("tf_efficientnet_lite0", pretrained="none", hidden=8)
    net.set_frozen_blocks(2)
    assert not any(p.requires_grad for p in net.backbone.blocks[1].parameters())
    assert all(p.requires_grad for p in net.backbone.blocks[2].parameters())
    net.train()
    assert not net.backbone.blocks[0].training and net.backbone.blocks[3].training
    out = net(view, torch.tensor([1, 12]))
    assert out["binary"].shape == (2, 6) and out["pfirrmann"].shape == (2, 4) and out["modic"].shape == (2, 4)
    thresholds = net.thresholds()
    assert (thresholds[1:] > thresholds[:-1]).all()


# --------------------------------------------------------------------------- tiny CV + training


@pytest.fixture(scope="module")
def tiny_spider(tmp_path_factory) -> Path:
    from spinedx.synth.mri import generate_mri_dataset

    out = tmp_path_factory.mktemp("synth-spider")
    generate_mri_dataset(out, n_patients=6, seed=5, image_size=(192, 192), pixel_spacing_mm=1.8)
    return out


def _tiny_config(root: Path, **extra) -> GraderConfig:
    values = dict(
        data_root=root,
        crop_size=40,
        epochs=1,
        folds=2,
        batch_size=16,
        pretrained="none",
        hidden=16,
        freeze_blocks=0,
        bootstrap_resamples=20,
        threads=1,
    )
    values.update(extra)
    return GraderConfig(**values)


@pytest.fixture(scope="module")
def tiny_run(tiny_spider, tmp_path_factory):
    out = tmp_path_factory.mktemp("grader")
    config = _tiny_config(tiny_spider)
    result = cross_validate_grader(config, out / "cv")
    weights = train_grader(config, out / "grader.pt", cv_dir=out / "cv")
    return config, out, result, weights


def test_folds_keep_patients_together(tiny_spider):
    data = load_grading_data(_tiny_config(tiny_spider))
    folds = patient_folds(data.table, 3, seed=0)
    assert set(folds) == {0, 1, 2}
    assert (data.table.assign(fold=folds).groupby("patient")["fold"].nunique() == 1).all()
    assert data.crops.shape == (len(data.table), 50, 50)
    with pytest.raises(InputError):
        patient_folds(data.table, 99, seed=0)


def test_cross_validation_writes_model_and_baseline(tiny_run):
    config, out, result, _ = tiny_run
    saved = json.loads((out / "cv" / CV_METRICS).read_text())
    assert set(saved["summary"]) == {"model", "level_baseline"}
    for side in ("model", "level_baseline"):
        for task in BINARY_TASKS:
            assert {"auroc", "average_precision", "sensitivity", "specificity"} <= set(saved[side][task])
        assert "kappa_quadratic" in saved[side]["pfirrmann"]
        assert "accuracy" in saved[side]["modic"]
    assert set(saved["ece"]) == set(BINARY_TASKS) | {"pfirrmann", "modic"}
    assert len(saved["folds"]) == config.folds
    oof = pd.read_csv(out / "cv" / OOF_PREDICTIONS)
    assert len(oof) == saved["data"]["n_discs"]
    assert oof.groupby("patient")["fold"].nunique().max() == 1
    assert oof[[f"{t}_prob" for t in BINARY_TASKS]].stack().between(0, 1).all()
    np.testing.assert_allclose(oof[[f"pfirrmann_p{g}" for g in range(1, 6)]].sum(axis=1), 1.0, atol=1e-4)
    assert (out / "cv" / "fold_0" / "last.pt").is_file()
    # A second call reuses the finished folds and gives the same numbers.
    again = cross_validate_grader(config, out / "cv")
    assert again["summary"] == result["summary"]


def test_killed_training_resumes_from_last_epoch(tiny_spider, tmp_path, monkeypatch):
    config = _tiny_config(tiny_spider, epochs=2)
    data = load_grading_data(config)
    real_save = loop.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit_grader(config, data.crops, data.table, tmp_path, seed=1)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    _, fit = fit_grader(config, data.crops, data.table, tmp_path, seed=1)
    assert fit["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in fit["history"]] == [1, 2]


def test_grade_output_shape_and_ranges(tiny_run, tiny_spider):
    _, _, _, weights = tiny_run
    grader = DiscGrader.load(weights)
    data = load_grading_data(_tiny_config(tiny_spider))
    rows = data.table[data.table["image_id"] == data.table["image_id"].iloc[0]]
    from spinedx.io.images import read_image

    pixels = read_image(tiny_spider / "images" / f"{rows['image_id'].iloc[0]}.png").pixels
    boxes = [tuple(r) for r in rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy()]
    results = grader.grade(pixels, boxes, rows["ivd_label"].tolist())
    assert len(results) == len(boxes)
    for entry in results:
        assert list(entry) == list(OUTPUT_ORDER)
        for task in BINARY_TASKS:
            assert list(entry[task]) == ["probability"]
            assert 0.0 <= entry[task]["probability"] <= 1.0
            assert isinstance(entry[task]["probability"], float)
        assert entry["pfirrmann"]["grade"] in {1, 2, 3, 4, 5}
        assert len(entry["pfirrmann"]["probabilities"]) == 5
        assert sum(entry["pfirrmann"]["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert entry["modic"]["grade"] in {0, 1, 2, 3}
        assert len(entry["modic"]["probabilities"]) == 4
        assert sum(entry["modic"]["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert isinstance(entry["pfirrmann"]["grade"], int) and isinstance(entry["modic"]["grade"], int)
    # Same crops, same answers (uint8 input is rescaled the same way).
    again = grader.grade((pixels * 255).astype(np.uint8), boxes, rows["ivd_label"].tolist())
    assert again[0]["bulging"]["probability"] == pytest.approx(results[0]["bulging"]["probability"], abs=0.02)
    assert grader.grade(pixels, [], []) == []
    assert set(grader.thresholds) == set(BINARY_TASKS)
    with pytest.raises(InputError):
        grader.grade(pixels, boxes, [1])
    with pytest.raises(InputError):
        grader.grade(pixels, [(10, 10, 5, 20)], [1])


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(InputError, match="not a disc grader"):
        DiscGrader.load(path)


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.skipif(not (SPIDER / "discs.csv").is_file(), reason="shared/data/spider-sagittal not present")
def test_real_data_crops_and_bundled_grader():
    discs = pd.read_csv(SPIDER / "discs.csv")
    image_id = discs["image_id"].iloc[0]
    rows = discs[discs["image_id"] == image_id]
    from spinedx.io.images import read_image

    pixels = read_image(SPIDER / "images" / f"{image_id}.png").pixels
    boxes = [tuple(r) for r in rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy()]
    crops = disc_crops(pixels, boxes, 96, 0.35)
    assert crops.shape[0] == len(rows) and 0.3 < crops.mean() < 0.7
    if not BUNDLED.is_file():
        pytest.skip("bundled disc_grader.pt not present")
    assert BUNDLED.stat().st_size < 30e6
    grader = DiscGrader.load(BUNDLED)
    results = grader.grade(pixels, boxes, rows["ivd_label"].tolist())
    assert len(results) == len(rows)
    # The bundled model saw these discs in training: its Pfirrmann grades should be close.
    predicted = np.array([r["pfirrmann"]["grade"] for r in results])
    assert np.mean(np.abs(predicted - rows["pfirrmann"].to_numpy())) <= 1.0


# --------------------------------------------------------------------------- localiser boxes


UNBOXED = ("1_t2", "5_t1", "5_t2", "6_t1", "6_t2")


@pytest.fixture(scope="module")
def unboxed_spider(tiny_spider, tmp_path_factory):
    """tiny_spider with the reference boxes of some series removed, and a fake localiser finding them."""
    import shutil

    from spinedx.io.images import read_image
    from spinedx.tasks.disc_localization.model import DiscDetection

    root = tmp_path_factory.mktemp("unboxed") / "spider"
    shutil.copytree(tiny_spider, root)
    discs = pd.read_csv(root / "discs.csv", dtype={"image_id": str})
    removed = discs[discs["image_id"].isin(UNBOXED)]
    discs[~discs["image_id"].isin(UNBOXED)].to_csv(root / "discs.csv", index=False)
    series = pd.read_csv(root / "series.csv", dtype={"image_id": str})
    series.drop(columns=["n_boxes", "boxes_match_gradings"], errors="ignore").to_csv(
        root / "series.csv", index=False
    )
    dataset_root = root
    found: dict[bytes, list] = {}
    for image_id, rows in removed.groupby("image_id"):
        path = next((dataset_root / "images").glob(f"{image_id}.*"))
        key = read_image(path).pixels.tobytes()
        found[key] = [
            DiscDetection(
                box=(r.xmin + 0.5, r.ymin, r.xmax, r.ymax - 0.5),
                score=0.9,
                ivd_label=int(r.ivd_label),
                level=r.level,
            )
            for r in rows.itertuples()
        ] + [DiscDetection(box=(1.0, 1.0, 20.0, 10.0), score=0.1, ivd_label=20, level="IVD20")]

    class FakeLocalizer:
        calls = 0

        def detect(self, pixels):
            FakeLocalizer.calls += 1
            return found[np.asarray(pixels).tobytes()], []

    return root, removed, FakeLocalizer


def test_localizer_boxes_add_graded_unboxed_series(unboxed_spider, tmp_path, monkeypatch):
    root, removed, fake = unboxed_spider
    monkeypatch.setattr(training, "_load_localizer", lambda path: (fake(), "f" * 64))
    plain = load_grading_data(_tiny_config(root))
    assert (plain.table["box_source"] == "reference").all()
    assert not plain.table["image_id"].isin(UNBOXED).any()
    config = _tiny_config(root, localizer_boxes=True)
    before = fake.calls
    data = load_grading_data(config, cache_dir=tmp_path)
    assert fake.calls - before == len(UNBOXED)
    assert (tmp_path / training.LOCALIZER_CACHE).is_file()
    table = data.table
    assert list(table.columns) == list(plain.table.columns)
    local = table[table["box_source"] == "localizer"]
    reference = table[table["box_source"] == "reference"]
    pd.testing.assert_frame_equal(reference.reset_index(drop=True), plain.table)
    # One row per graded disc the localiser found; the ungraded IVD20 detection is left out.
    assert len(local) == len(removed)
    assert set(local["image_id"]) == set(UNBOXED)
    merged = local.merge(removed, on=["image_id", "ivd_label"], suffixes=("", "_ref"))
    assert len(merged) == len(removed)
    for column in ["level", "herniation", "bulging", "narrowing", "pfirrmann", "modic"]:
        assert (merged[column] == merged[f"{column}_ref"]).all(), column
    np.testing.assert_allclose(merged["xmin"], merged["xmin_ref"] + 0.5)
    assert data.crops.shape[0] == len(table)
    # Rerun: the cached detections are reused, the localiser is not run again.
    before = fake.calls
    again = load_grading_data(config, cache_dir=tmp_path)
    assert fake.calls == before
    pd.testing.assert_frame_equal(again.table, table)
    np.testing.assert_array_equal(again.crops, data.crops)


def test_localizer_folds_keep_reference_folds_and_patients(unboxed_spider, monkeypatch):
    root, _, fake = unboxed_spider
    monkeypatch.setattr(training, "_load_localizer", lambda path: (fake(), "f" * 64))
    table = load_grading_data(_tiny_config(root, localizer_boxes=True)).table
    folds = patient_folds(table, 2, seed=0)
    assert (folds >= 0).all()
    assert (table.assign(fold=folds).groupby("patient")["fold"].nunique() == 1).all()
    reference = (table["box_source"] == "reference").to_numpy()
    np.testing.assert_array_equal(folds[reference], patient_folds(table[reference], 2, seed=0))


def test_localizer_boxes_fingerprint():
    plain = GraderConfig()
    assert plain.fingerprint() == GraderConfig(localizer_boxes=False).fingerprint()
    assert "localizer_boxes" not in json.dumps(plain.model_dump(mode="json", exclude={"localizer_boxes"}))
    assert GraderConfig(localizer_boxes=True).fingerprint() != plain.fingerprint()


def test_cross_validation_with_localizer_boxes_scores_reference_discs(unboxed_spider, tmp_path, monkeypatch):
    root, removed, fake = unboxed_spider
    monkeypatch.setattr(training, "_load_localizer", lambda path: (fake(), "f" * 64))
    config = _tiny_config(root, localizer_boxes=True)
    result = cross_validate_grader(config, tmp_path / "cv")
    n_reference = len(load_grading_data(_tiny_config(root)).table)
    assert result["data"]["n_discs"] == n_reference
    assert result["data"]["n_localizer_discs"] == len(removed)
    assert result["all_discs"]["data"]["n_discs"] == n_reference + len(removed)
    assert set(result["all_discs"]["summary"]) == {"model", "level_baseline"}
    assert (tmp_path / "cv" / training.LOCALIZER_CACHE).is_file()
    oof = pd.read_csv(tmp_path / "cv" / OOF_PREDICTIONS)
    assert set(oof["box_source"]) == {"reference", "localizer"}
    assert oof.groupby("patient")["fold"].nunique().max() == 1
    weights = train_grader(config, tmp_path / "grader.pt", cv_dir=tmp_path / "cv")
    assert weights.is_file()


def test_grader_init_starts_from_the_bundled_network_or_says_why_it_cannot(tmp_path):
    from spinedx.models.registry import resolve_weights
    from spinedx.tasks.disc_grading.config import GraderConfig
    from spinedx.tasks.disc_grading.model import DiscGrader
    from spinedx.tasks.disc_grading.train import build_model

    bundled = DiscGrader.load(resolve_weights("disc_grader").path).model.state_dict()
    started = build_model(GraderConfig(data_root=tmp_path, init="bundled")).state_dict()
    assert all(torch.equal(started[name], value.to(started[name].dtype)) for name, value in bundled.items())
    # The init grader's network settings apply; one set otherwise is an error naming both values.
    with pytest.raises(ValidationError, match=r"hidden is 16, but the init grader's is \d+"):
        GraderConfig(data_root=tmp_path, init="bundled", hidden=16)
    with pytest.raises(InputError, match="neither 'none', 'bundled' nor an existing grader file"):
        build_model(GraderConfig(data_root=tmp_path, init=str(tmp_path / "missing.pt")))
