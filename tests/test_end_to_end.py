"""The whole radiograph pipeline through the CLI on a tiny synthetic set: synth, check, show, train, evaluate, predict."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO, tiny_overrides
from spinedx.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def sets(overrides: list[str]) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


@pytest.fixture(scope="module")
def trained_run(tiny_xray, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "xray"
    result = invoke(
        "train", REPO / "configs/xray_lesions.yaml", "--out", run_dir, *sets(tiny_overrides(tiny_xray))
    )
    assert result.exit_code == 0, result.output
    return run_dir


def test_synth_check_show(tmp_path):
    data = tmp_path / "data"
    assert invoke("synth", "xray", "--out", data, "--n", 8, "--size", 256).exit_code == 0
    check = invoke("data", "check", data / "annotations.csv", "--images", data / "images", "--json")
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["n_images_found"] == 8 and not report["missing_files"]
    shown = invoke(
        "data", "show", data / "annotations.csv", "--images", data / "images", "--out", tmp_path / "shown"
    )
    assert shown.exit_code == 0 and len(list((tmp_path / "shown").glob("*.png"))) == 8


def test_train_writes_a_reproducible_run(trained_run):
    for name in ("config.yaml", "run_info.json", "splits.csv", "history.json", "best.pt", "last.pt"):
        assert (trained_run / name).is_file(), name
    history = json.loads((trained_run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0]["backbone_frozen"] and not history[1]["backbone_frozen"]
    splits = pd.read_csv(trained_run / "splits.csv")
    assert splits.groupby("group")["split"].nunique().max() == 1
    summary = json.loads((trained_run / "train_summary.json").read_text())
    assert summary["weights_source"].startswith("ImageNet")


def test_evaluate_writes_metrics_and_report(trained_run):
    result = invoke("evaluate", trained_run, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["class_names"] == ["Osteophytes", "minor"]
    for key in ("accuracy", "balanced_accuracy", "roc_auc"):
        assert len(metrics[key]["ci95"]) == 2
    assert set(metrics["per_class"]["minor"]) >= {
        "precision",
        "recall",
        "f1",
        "support",
        "sensitivity",
        "specificity",
    }
    html = (trained_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5


def test_predict_boxes_as_json(trained_run, tiny_xray):
    annotations = pd.read_csv(tiny_xray / "annotations.csv")
    image_id = annotations.dropna(subset=["xmin"])["image_id"].iloc[0]
    image = tiny_xray / "images" / f"{image_id}.png"
    result = invoke(
        "predict", trained_run, image, "--boxes", tiny_xray / "annotations.csv", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    expected = annotations[(annotations["image_id"] == image_id) & annotations["xmin"].notna()]
    assert len(records) == len(expected)
    for record in records:
        assert abs(record["p_Osteophytes"] + record["p_minor"] - 1.0) < 1e-5
        assert record["predicted_class"] in ("Osteophytes", "minor")


def test_predict_goes_on_past_a_bad_image(trained_run, tiny_xray, tmp_path):
    good = next((tiny_xray / "images").glob("*.png"))
    result = invoke("predict", trained_run, tmp_path / "missing.png", good)
    assert result.exit_code == 2
    assert "missing.png: file not found" in result.stderr
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 1


def test_thesis_recipe_runs(tiny_xray, tmp_path):
    result = invoke(
        "train", REPO / "configs/thesis.yaml", "--out", tmp_path / "thesis",
        *sets(tiny_overrides(tiny_xray, "train.epochs=1")),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "thesis" / "train_summary.json").read_text())
    assert summary["weights_source"] == "random init"


def test_evaluate_on_another_dataset(trained_run, tmp_path):
    from spinedx.synth.xray import generate_xray_dataset

    other = tmp_path / "other"
    generate_xray_dataset(other, n_images=12, seed=99, image_size=256)
    out = tmp_path / "eval"
    result = invoke(
        "evaluate", trained_run, "--data", other / "annotations.csv", "--images", other / "images",
        "--out", out, "--bootstrap", 20,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    boxed = pd.read_csv(other / "annotations.csv").dropna(subset=["xmin"])
    assert metrics["n"] == len(boxed)
    assert (out / "report.html").is_file()


def test_python_api_matches_the_cli(trained_run, tiny_xray):
    from spinedx import api

    image = next((tiny_xray / "images").glob("*.png"))
    predictions = api.predict(trained_run, [image])
    assert len(predictions.records) == 1 and not predictions.errors
    report = api.check(tiny_xray / "annotations.csv", tiny_xray / "images")
    assert report.ok()


def test_weighted_sampler_and_multiclass_label_map(tiny_xray, tmp_path):
    labels = '{"Osteophytes": "Osteophytes", "Disc space narrowing": "DSN", "*": "other"}'
    result = invoke(
        "train", REPO / "configs/xray_lesions.yaml", "--out", tmp_path / "multi",
        *sets(tiny_overrides(tiny_xray, "train.epochs=1", "train.class_balance=sampler", f"data.labels={labels}")),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "multi" / "train_summary.json").read_text())
    assert summary["class_names"] == ["Osteophytes", "DSN", "other"]
