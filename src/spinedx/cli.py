"""The `spinedx` command line: a thin layer over the Python API, one subcommand per job.

Every user-fixable problem surfaces as ``error: <message>`` on stderr with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from spinedx.errors import InputError

app = typer.Typer(
    help="Detection and classification of spinal lesions on radiographs and MRI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
synth_app = typer.Typer(help="Generate synthetic datasets with ground truth.", no_args_is_help=True)
data_app = typer.Typer(help="Check and view annotated datasets.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(data_app, name="data")

EXIT_BAD_INPUT = 2


class OutputFormat(StrEnum):
    csv = "csv"
    json = "json"


@synth_app.command("xray")
def synth_xray(
    out: Annotated[Path, typer.Option(help="output folder (images/ and annotations.csv)")],
    n: Annotated[int, typer.Option(help="number of images")] = 300,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same files")] = 42,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 512,
) -> None:
    """Synthetic lateral lumbar radiographs with lesions, in VinDr-SpineXR CSV + PNG format."""
    from spinedx.synth.xray import generate_xray_dataset

    csv = generate_xray_dataset(out, n_images=n, seed=seed, image_size=size)
    typer.echo(f"wrote {n} images and {csv}")


@synth_app.command("mri")
def synth_mri(
    out: Annotated[
        Path, typer.Option(help="output folder, laid out like spider-sagittal (+ masks/, spacing.csv)")
    ],
    patients: Annotated[int, typer.Option(help="number of patients (one t1 and one t2 slice each)")] = 40,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same files")] = 42,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 384,
) -> None:
    """Synthetic mid-sagittal lumbar MRI with disc boxes, grades and masks."""
    from spinedx.synth.mri import generate_mri_dataset

    root = generate_mri_dataset(out, n_patients=patients, seed=seed, image_size=(size, size))
    typer.echo(f"wrote {patients} patients to {root}")


@data_app.command("check")
def data_check(
    csv: Annotated[Path, typer.Argument(help="VinDr-SpineXR style annotation CSV")],
    images: Annotated[Path, typer.Option(help="folder holding the images (PNG/JPEG/DICOM)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Validate annotations against the images; exit 2 when errors are found."""
    from spinedx.data.check import check_dataset

    report = check_dataset(csv, images, progress=not as_json)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if not report.ok():
        raise typer.Exit(EXIT_BAD_INPUT)


@data_app.command("show")
def data_show(
    csv: Annotated[Path, typer.Argument(help="VinDr-SpineXR style annotation CSV")],
    images: Annotated[Path, typer.Option(help="folder holding the images")],
    out: Annotated[Path, typer.Option(help="folder for the annotated PNGs")],
    image_id: Annotated[
        list[str] | None, typer.Option("--image-id", help="only these images (repeatable)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many images")] = None,
) -> None:
    """Draw the annotated boxes, lesion labels and readers on the images."""
    from spinedx.data.show import render_annotations
    from spinedx.io.vindr import read_vindr_csv

    written = render_annotations(read_vindr_csv(csv), images, out, image_ids=image_id or None, limit=limit)
    for line in written.skipped:
        typer.echo(f"warning: skipped {line}", err=True)
    typer.echo(f"wrote {len(written)} images to {out}")


def _bundled_model_trainer(task: str | None):
    """(parse_recipe, train) of a recipe whose models can be bundled, or None for classifier recipes."""
    if task == "mri-discs":
        from spinedx.training.mri_discs import parse_recipe, train_mri_discs

        return parse_recipe, train_mri_discs
    if task == "spine-seg":
        from spinedx.training.spine_seg import parse_recipe, train_spine_seg

        return parse_recipe, train_spine_seg
    return None


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(help="YAML recipe, e.g. configs/xray_lesions.yaml or configs/spider_discs.yaml")
    ],
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<recipe name>)")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a recipe value: KEY=VALUE")
    ] = None,
    bundle: Annotated[
        bool,
        typer.Option(help="mri-discs / spine-seg recipes: install the trained weights as the bundled models"),
    ] = False,
) -> None:
    """Train a recipe; a run killed mid-way resumes from its last finished epoch when restarted."""
    from spinedx.training.config import parse_config, read_recipe

    raw = read_recipe(config, overrides)
    bundled_task = _bundled_model_trainer(raw.get("task"))
    if bundled_task is not None:
        from spinedx.models.registry import BUNDLED_DIR

        parse_recipe, train_recipe = bundled_task
        recipe = parse_recipe(raw, str(config))
        paths = train_recipe(
            recipe, out or Path("runs") / recipe.name, register_into=BUNDLED_DIR if bundle else None
        )
        typer.echo("\n".join(f"{name}: {path}" for name, path in paths.items()))
        return
    from spinedx.training.experiment import train_experiment

    recipe = parse_config(raw, source=str(config))
    outcome = train_experiment(recipe, out or Path("runs") / recipe.name)
    fit = outcome.fit
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(
            f"best epoch {fit.best_epoch}: {recipe.train.monitor}={fit.best_value:.4f}; run in {outcome.run_dir}"
        )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    data: Annotated[
        Path | None, typer.Option(help="annotation CSV to evaluate on (default: the run's test studies)")
    ] = None,
    images: Annotated[Path | None, typer.Option(help="image folder for --data")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: the run folder)")] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% CIs")] = 1000,
) -> None:
    """Metrics with 95% bootstrap CIs (metrics.json) and a self-contained report.html."""
    from spinedx.evaluation.run_evaluation import evaluate_run

    outcome = evaluate_run(run_dir, csv=data, images=images, out_dir=out, n_resamples=bootstrap)
    metrics = outcome.metrics
    typer.echo(metrics["classification_report_text"])
    typer.echo(f"metrics: {outcome.metrics_path}\nreport: {outcome.report_path}")


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    images: Annotated[list[Path], typer.Argument(help="image files (PNG/JPEG/DICOM)")],
    boxes: Annotated[Path | None, typer.Option(help="VinDr-style CSV of boxes; image_id = file stem")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="csv or json")] = OutputFormat.csv,
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Class probabilities per region of interest (each box, or the whole image without --boxes)."""
    import pandas as pd

    from spinedx.inference.predict import predict_images
    from spinedx.inference.roi_classifier import TrainedClassifier
    from spinedx.io.atomic import atomic_write_text
    from spinedx.io.vindr import read_vindr_csv

    classifier = TrainedClassifier.load(run_dir)
    result = predict_images(classifier, images, read_vindr_csv(boxes) if boxes else None)
    for line in result.errors:
        typer.echo(f"error: {line}", err=True)
    if output_format is OutputFormat.json:
        text = json.dumps(result.records, indent=2)
    else:
        text = pd.DataFrame(result.records).to_csv(index=False)
    if out:
        atomic_write_text(out, text)
    else:
        typer.echo(text, nl=False)
    if result.errors:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def analyze(
    inputs: Annotated[
        list[Path], typer.Argument(help="images, DICOM files or series folders, NIfTI or MetaImage volumes")
    ],
    out: Annotated[Path, typer.Option(help="output folder: one sub-folder per input")],
    task: Annotated[
        str | None, typer.Option(help="analysis task (mri-discs); read from DICOM tags when omitted")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="also print one JSON object per input on stdout")
    ] = False,
) -> None:
    """Findings per input with the bundled models: findings.json, overlay.png and report.html."""
    from spinedx.pipelines.analyze import analyze_inputs

    failed = 0
    for result in analyze_inputs(inputs, out, task):
        if result.error:
            failed += 1
            typer.echo(f"error: {result.error}", err=True)
        elif as_json:
            typer.echo(json.dumps(result.findings.model_dump(mode="json", by_alias=True)))
        else:
            typer.echo(f"{result.path}: {len(result.findings.discs)} discs -> {result.out_dir}")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("evaluate-discs")
def evaluate_discs(
    data: Annotated[
        Path, typer.Option(help="folder laid out like spider-sagittal (series/discs/gradings CSVs, images/)")
    ],
    out: Annotated[Path, typer.Option(help="output folder for metrics.json and report.html")] = Path(
        "runs/evaluate-discs"
    ),
    bootstrap: Annotated[
        int, typer.Option(help="bootstrap resamples (over patients) for the 95% CIs")
    ] = 1000,
    cv_run: Annotated[
        Path | None,
        typer.Option(
            help="a `spinedx train configs/spider_discs.yaml` run: score each patient with the fold "
            "models that held it out (end-to-end cross-validation) instead of the bundled models"
        ),
    ] = None,
) -> None:
    """Localisation, levels and grades of the MRI disc models against reference annotations."""
    from spinedx.evaluation.disc_study import evaluate_discs as run_evaluation

    outcome = run_evaluation(data, out, n_resamples=bootstrap, cv_run=cv_run)
    typer.echo(json.dumps({"localisation": outcome.metrics["localisation"]}, indent=2, default=float))
    typer.echo(f"metrics: {outcome.metrics_path}\nreport: {outcome.report_path}")


@app.command("evaluate-seg")
def evaluate_seg(
    run_dir: Annotated[
        str | None, typer.Argument(help="a spine-seg run folder or a .pt weight file (default: --model)")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="folder with images/ and masks/ (synth, mri-seg-small or colour masks)"),
    ] = None,
    model: Annotated[
        str, typer.Option(help="'bundled' for the packaged segmenter when RUN_DIR is omitted")
    ] = "bundled",
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: RUN_DIR/evaluation or runs/evaluate-seg)")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(help="bootstrap resamples (over patients) for the 95% CIs")
    ] = 1000,
) -> None:
    """Per-class Dice, IoU, precision, recall, specificity, accuracy, HD95 and ASD with 95% CIs + report.html."""
    from spinedx.evaluation.seg_study import evaluate_segmenter

    if data is None:
        raise InputError("--data: a folder with images/ and masks/ is required")
    source = run_dir or model
    default_out = (
        Path(run_dir) / "evaluation" if run_dir and Path(run_dir).is_dir() else Path("runs/evaluate-seg")
    )
    outcome = evaluate_segmenter(source, data, out or default_out, n_resamples=bootstrap)
    summary = {
        name: {m: c[m]["estimate"] for m in ("dice", "iou", "hd95")}
        for name, c in outcome.metrics["classes"].items()
    }
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"metrics: {outcome.metrics_path}\nreport: {outcome.report_path}")


def main() -> None:
    try:
        app()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
