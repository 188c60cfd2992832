"""HTML evaluation report and the PNG figures it embeds."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from spinedx.errors import InputError
from spinedx.evaluation import plots
from spinedx.evaluation.classification import classification_metrics
from spinedx.tasks.xray_lesions.report import write_evaluation_report

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = ["normal", "herniation", "fracture"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=90)
    logits = rng.normal(size=(90, 3))
    logits[np.arange(90), y] += 2.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def metrics(data) -> dict:
    y, p = data
    return classification_metrics(y, p, CLASSES, groups=np.arange(90) // 3, n_resamples=100)


@pytest.fixture(scope="module")
def figures(data, metrics) -> dict[str, bytes]:
    y, p = data
    pred = p.argmax(axis=1)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 1 - 0.5 / e,
            "val_accuracy": 0.9 - 0.5 / e,
        }
        for e in range(1, 6)
    ]
    rng = np.random.default_rng(1)
    return {
        "training_curves": plots.plot_training_curves(history),
        "confusion_matrix": plots.plot_confusion_matrix(metrics["confusion_matrix"], CLASSES),
        "roc_curves": plots.plot_roc_curves(y, p, CLASSES),
        "class_counts": plots.plot_class_counts(
            {"train": {"normal": 50, "herniation": 30}, "test": {"normal": 9}}
        ),
        "sample_predictions": plots.plot_sample_predictions(
            [rng.random((32, 32)), rng.random((32, 32, 3)), rng.random((3, 32, 32))],
            [CLASSES[k] for k in y[:3]],
            [CLASSES[k] for k in pred[:3]],
            [float(p[i, pred[i]]) for i in range(3)],
        ),
    }


RUN_INFO = {
    "config_name": "mri_t2_sagittal",
    "backbone": "efficientnet_lite0",
    "dataset": "synthetic",
    "n_per_split": {"train": 600, "val": 90, "test": 90},
    "git_commit": "0123abc",
    "date": "2025-01-31",
}


def _ci_string(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['value']:.2f} (95% CI {lo:.2f}–{hi:.2f})"


def test_figures_are_png_and_not_left_open(figures) -> None:
    for key, png in figures.items():
        assert png.startswith(PNG), key
    assert plt.get_fignums() == []


def test_plot_edge_cases() -> None:
    assert plots.plot_training_curves([]).startswith(PNG)
    assert plots.plot_training_curves([{"epoch": 1, "train_loss": 0.5}]).startswith(PNG)
    assert plots.plot_confusion_matrix([[0, 0], [1, 2]], ["a", "b"], normalize=True).startswith(PNG)
    assert plots.plot_roc_curves([0, 0, 0], np.eye(2)[[0, 0, 1]], ["a", "b"]).startswith(PNG)
    assert plots.plot_roc_curves([0, 1, 2], np.eye(3), ["a", "b", "c"]).startswith(PNG)
    with pytest.raises(InputError):
        plots.plot_sample_predictions([np.zeros((4, 4))], ["a"], [], [0.5])
    with pytest.raises(InputError):
        plots.plot_confusion_matrix([[1, 2]], ["a", "b"])


def test_report_written_with_headline_numbers_and_images(tmp_path: Path, metrics, figures) -> None:
    out = write_evaluation_report(
        tmp_path / "run1" / "report.html",
        title="Spine lesion classifier <test>",
        metrics=metrics,
        figures=figures,
        run_info=RUN_INFO,
    )
    assert out == tmp_path / "run1" / "report.html"
    html = out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp files left

    assert "Spine lesion classifier &lt;test&gt;" in html  # escaped
    for entry in (
        metrics["accuracy"],
        metrics["balanced_accuracy"],
        metrics["macro_avg"]["f1"],
        metrics["roc_auc"],
    ):
        lo, hi = entry["ci95"]
        assert f"{entry['value']:.2f}" in html
        assert f"95% CI {lo:.2f}–{hi:.2f}" in html
    for value in ("mri_t2_sagittal", "efficientnet_lite0", "0123abc", "2025-01-31", "test: 90"):
        assert value in html
    for name in CLASSES:
        assert name in html
    assert "How to read this" in html
    assert "<pre>" in html and "weighted avg" in html

    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(figures)
    assert all(base64.b64decode(img).startswith(PNG) for img in images)


def test_report_is_self_contained(tmp_path: Path, metrics, figures) -> None:
    html = write_evaluation_report(
        tmp_path / "r.html", title="t", metrics=metrics, figures=figures, run_info=RUN_INFO
    ).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.IGNORECASE)
    assert "<link" not in html.lower()
    assert "<script" not in html.lower()
    assert "@import" not in html


def test_report_into_directory_and_overwrite(tmp_path: Path, metrics) -> None:
    first = write_evaluation_report(tmp_path, title="first", metrics=metrics, figures={}, run_info={})
    assert first == tmp_path / "report.html"
    second = write_evaluation_report(tmp_path, title="second", metrics=metrics, figures={}, run_info={})
    assert "second" in second.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_report_with_undefined_auc(tmp_path: Path) -> None:
    y = np.zeros(4, dtype=int)
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    m = classification_metrics(y, p, ["normal", "lesion"], n_resamples=50)
    html = write_evaluation_report(
        tmp_path / "r.html", title="t", metrics=m, figures={}, run_info={}
    ).read_text(encoding="utf-8")
    assert "not defined" in html
    assert "Cautions" in html


def test_non_png_figure_rejected(tmp_path: Path, metrics) -> None:
    with pytest.raises(InputError, match="bogus"):
        write_evaluation_report(
            tmp_path / "r.html", title="t", metrics=metrics, figures={"bogus": b"GIF89a"}, run_info={}
        )
    assert not (tmp_path / "r.html").exists()
