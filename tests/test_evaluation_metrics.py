"""Classification metrics and bootstrap CIs on small, hand-checkable cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from spinedx.errors import InputError
from spinedx.evaluation.bootstrap import bootstrap_ci, bootstrap_many, resample_indices
from spinedx.evaluation.classification import classification_metrics

N_BOOT = 200


def _one_hot_probs(pred: list[int], n_classes: int, confidence: float = 0.8) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (rows sum to 1)."""
    p = np.full((len(pred), n_classes), (1 - confidence) / (n_classes - 1))
    p[np.arange(len(pred)), pred] = confidence
    return p


def _noisy_scores(n: int, n_classes: int, seed: int, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def _json_roundtrip(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, allow_nan=False))


# ---------------------------------------------------------------- classification_metrics


def test_perfect_predictions() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y, _one_hot_probs(list(y), 3), ["a", "b", "c"], n_resamples=N_BOOT)
    assert m["n"] == 6
    assert m["class_names"] == ["a", "b", "c"]
    assert m["accuracy"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert m["balanced_accuracy"]["value"] == 1.0
    assert m["macro_avg"]["f1"]["value"] == 1.0
    assert m["roc_auc"]["value"] == 1.0
    assert m["roc_auc"]["kind"] == "macro_ovr"
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    for name in "abc":
        cls = m["per_class"][name]
        assert cls["precision"] == cls["recall"] == cls["sensitivity"] == cls["specificity"] == 1.0
        assert cls["support"] == 2
        assert cls["roc_auc"]["value"] == 1.0
        assert cls["average_precision"] == 1.0
    # Only a note that some tiny resamples lacked a class for the macro AUC.
    assert all("95% CI" in w for w in m["warnings"])
    assert "precision" in m["classification_report_text"]


def test_known_binary_confusion_matrix() -> None:
    # 4 positives, 6 negatives; TP=3, FN=1, FP=2, TN=4.
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    p = _one_hot_probs(pred, 2, confidence=0.7)
    m = classification_metrics(y, p, ["normal", "lesion"], n_resamples=N_BOOT)

    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["accuracy"]["value"] == pytest.approx(0.7)
    lesion, normal = m["per_class"]["lesion"], m["per_class"]["normal"]
    assert lesion["precision"] == pytest.approx(3 / 5)
    assert lesion["recall"] == lesion["sensitivity"] == pytest.approx(3 / 4)
    assert lesion["specificity"] == pytest.approx(4 / 6)
    assert lesion["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert lesion["support"] == 4
    assert normal["precision"] == pytest.approx(4 / 5)
    assert normal["sensitivity"] == pytest.approx(4 / 6)
    assert normal["specificity"] == pytest.approx(3 / 4)
    assert normal["support"] == 6
    assert m["balanced_accuracy"]["value"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["macro_avg"]["precision"] == pytest.approx((0.6 + 0.8) / 2)
    assert m["weighted_avg"]["recall"] == pytest.approx(0.7)
    assert m["roc_auc"]["kind"] == "binary"
    # Binary AUC is that of class 1, and equals sklearn's on the positive-class column.
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    assert lesion["roc_auc"]["value"] == pytest.approx(m["roc_auc"]["value"])


def test_auc_and_average_precision_match_sklearn_multiclass() -> None:
    y, p = _noisy_scores(150, 4, seed=3)
    m = classification_metrics(y, p, ["w", "x", "y", "z"], n_resamples=50)
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    for k, name in enumerate("wxyz"):
        assert m["per_class"][name]["roc_auc"]["value"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert m["per_class"][name]["average_precision"] == pytest.approx(
            average_precision_score(y == k, p[:, k])
        )
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(y, p.argmax(axis=1)))


def test_binary_auc_matches_sklearn() -> None:
    y, p = _noisy_scores(80, 2, seed=5, signal=1.0)
    m = classification_metrics(y, p, ["neg", "pos"], n_resamples=50)
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p[:, 1]))


def test_ci_contains_point_estimate_and_narrows_with_more_data() -> None:
    widths = []
    for n in (40, 400):
        y, p = _noisy_scores(n, 3, seed=11)
        m = classification_metrics(y, p, ["a", "b", "c"], n_resamples=N_BOOT, seed=1)
        for entry in (m["accuracy"], m["balanced_accuracy"], m["macro_avg"]["f1"], m["roc_auc"]):
            lo, hi = entry["ci95"]
            assert lo <= entry["value"] <= hi
        lo, hi = m["accuracy"]["ci95"]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_same_seed_same_result_and_json_serialisable() -> None:
    y, p = _noisy_scores(60, 3, seed=2)
    a = classification_metrics(y, p, ["a", "b", "c"], n_resamples=100, seed=7)
    b = classification_metrics(y, p, ["a", "b", "c"], n_resamples=100, seed=7)
    assert a == b
    assert _json_roundtrip(a) == a


def test_single_class_in_y_true_does_not_crash() -> None:
    y = np.zeros(5, dtype=int)
    p = _one_hot_probs([0, 0, 1, 0, 0], 2)
    m = classification_metrics(y, p, ["normal", "lesion"], n_resamples=N_BOOT)
    assert m["roc_auc"]["value"] is None
    assert m["roc_auc"]["ci95"] == [None, None]
    assert m["per_class"]["lesion"]["recall"] is None  # no true lesions
    assert m["per_class"]["lesion"]["average_precision"] is None
    assert m["per_class"]["normal"]["specificity"] is None  # no true negatives for "normal"
    assert m["accuracy"]["value"] == pytest.approx(0.8)
    assert any("one class" in w.lower() for w in m["warnings"])
    _json_roundtrip(m)


def test_absent_and_never_predicted_classes_are_flagged() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = _one_hot_probs([0, 1, 1, 1, 0, 0], 3)  # class "c" neither present nor predicted
    m = classification_metrics(y, p, ["a", "b", "c"], n_resamples=50)
    assert m["per_class"]["c"]["support"] == 0
    assert m["per_class"]["c"]["precision"] is None
    assert m["per_class"]["c"]["roc_auc"]["value"] is None
    assert m["roc_auc"]["value"] is None  # macro one-vs-rest needs every class
    assert any("'c'" in w for w in m["warnings"])
    _json_roundtrip(m)


def test_grouped_metrics_report_group_unit() -> None:
    y, p = _noisy_scores(60, 2, seed=4)
    groups = np.repeat(np.arange(20), 3)
    m = classification_metrics(y, p, ["neg", "pos"], groups=groups, n_resamples=100)
    assert m["bootstrap"]["unit"] == "group"
    assert m["bootstrap"]["n_units"] == 20
    lo, hi = m["accuracy"]["ci95"]
    assert lo <= m["accuracy"]["value"] <= hi


@pytest.mark.parametrize(
    ("y", "p"),
    [(np.array([], dtype=int), np.zeros((0, 2))), (np.array([], dtype=int), np.array([]))],
)
def test_empty_input_raises(y: np.ndarray, p: np.ndarray) -> None:
    with pytest.raises(InputError, match="no samples to evaluate"):
        classification_metrics(y, p, ["a", "b"])


def test_bad_input_raises_input_error() -> None:
    with pytest.raises(InputError, match="sums to"):
        classification_metrics(np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]]), ["a", "b"])
    with pytest.raises(InputError, match="row 1"):
        classification_metrics(np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"])
    with pytest.raises(InputError, match="shape"):
        classification_metrics(np.array([0, 1]), np.array([[1.0, 0.0, 0.0]] * 2), ["a", "b"])
    with pytest.raises(InputError, match="groups"):
        classification_metrics(np.array([0, 1]), np.eye(2), ["a", "b"], groups=np.array([1]))


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_basic_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=2.0, size=200)
    est, lo, hi = bootstrap_ci(np.mean, x, n_resamples=300, seed=3)
    assert est == pytest.approx(x.mean())
    assert lo < est < hi
    # ~ mean ± 1.96 * SE
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(len(x)), rel=0.25)
    assert bootstrap_ci(np.mean, x, n_resamples=300, seed=3) == (est, lo, hi)


def test_bootstrap_undefined_metric_gives_nan() -> None:
    def always_undefined(_x: np.ndarray) -> float:
        raise ValueError("undefined")

    est, lo, hi = bootstrap_ci(always_undefined, np.arange(5), n_resamples=20)
    assert math.isnan(est) and math.isnan(lo) and math.isnan(hi)
    est, lo, hi = bootstrap_ci(np.mean, np.array([]), n_resamples=20)
    assert math.isnan(est) and math.isnan(lo) and math.isnan(hi)


def test_bootstrap_skips_resamples_without_both_classes() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # many resamples miss the single positive
    s = np.linspace(1, 0, 8)
    res = bootstrap_many({"auc": roc_auc_score}, y, s, n_resamples=200, seed=0)["auc"]
    assert res.estimate == 1.0
    assert 0 < res.n_valid < 200
    assert res.lower == pytest.approx(1.0) and res.upper == pytest.approx(1.0)


def test_grouped_resampling_keeps_groups_whole() -> None:
    groups = np.array(["p1", "p1", "p1", "p2", "p2", "p3"])
    sizes = {"p1": 3, "p2": 2, "p3": 1}
    for idx in resample_indices(len(groups), groups=groups, n_resamples=50, seed=0):
        drawn, counts = np.unique(groups[idx], return_counts=True)
        for g, c in zip(drawn, counts, strict=True):
            assert c % sizes[g] == 0


def test_grouped_ci_is_wider_for_clustered_data() -> None:
    # 20 patients, 10 identical images each: the per-image bootstrap pretends there are 200
    # independent cases and is too narrow; the per-patient one is honest.
    rng = np.random.default_rng(0)
    per_patient = rng.integers(0, 2, size=20).astype(float)
    correct = np.repeat(per_patient, 10)
    groups = np.repeat(np.arange(20), 10)
    _, lo_s, hi_s = bootstrap_ci(np.mean, correct, n_resamples=300, seed=0)
    _, lo_g, hi_g = bootstrap_ci(np.mean, correct, groups=groups, n_resamples=300, seed=0)
    assert (hi_g - lo_g) > 2 * (hi_s - lo_s)


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(InputError):
        bootstrap_ci(np.mean, np.arange(3), np.arange(4))
    with pytest.raises(InputError):
        bootstrap_ci(np.mean, np.arange(3), groups=np.arange(2))
    with pytest.raises(InputError):
        bootstrap_ci(np.mean, np.arange(3), alpha=1.5)
