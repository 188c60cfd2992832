"""The `spinedx` command line: a thin layer over the Python API, one subcommand per job.

Every user-fixable problem surfaces as ``error: <message>`` on stderr with exit code 2.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from spinedx import api
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
pacs_app = typer.Typer(help="Exchange DICOM with a PACS or modality (C-STORE).", no_args_is_help=True)
app.add_typer(pacs_app, name="pacs")
reviews_app = typer.Typer(help="Reviews made in `spinedx serve`.", no_args_is_help=True)
app.add_typer(reviews_app, name="reviews")

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
    csv = api.synth_xray(out, n_images=n, seed=seed, image_size=size)
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
    root = api.synth_mri(out, n_patients=patients, seed=seed, image_size=size)
    typer.echo(f"wrote {patients} patients to {root}")


@data_app.command("check")
def data_check(
    csv: Annotated[Path, typer.Argument(help="VinDr-SpineXR style annotation CSV")],
    images: Annotated[Path, typer.Option(help="folder holding the images (PNG/JPEG/DICOM)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Validate annotations against the images; exit 2 when errors are found."""
    report = api.check(csv, images, progress=not as_json)
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
    written = api.show(csv, images, out, image_ids=image_id or None, limit=limit)
    for line in written.skipped:
        typer.echo(f"warning: skipped {line}", err=True)
    typer.echo(f"wrote {len(written)} images to {out}")


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
    """Train a recipe (its `task` key picks the schema); a killed run resumes from its last finished epoch."""
    paths = api.train(config, out, overrides, bundle=bundle)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process reports
        typer.echo("\n".join(f"{name}: {path}" for name, path in paths.items()))


@app.command()
def evaluate(
    run_dir: Annotated[
        Path, typer.Argument(help="a training run folder (`spinedx train --out`) of any task")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="xray-lesions: annotation CSV (default: the run's test studies); mri-discs: a spider-sagittal "
            "folder (default: the recipe's); spine-seg: a folder with images/ and masks/ (default: the run's "
            "cross-validation figures)"
        ),
    ] = None,
    images: Annotated[Path | None, typer.Option(help="xray-lesions: image folder for --data")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="output folder (default: the run folder; mri-discs and spine-seg: RUN/evaluation)"),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% CIs")] = 1000,
) -> None:
    """Score a training run with its task's evaluator: metrics.json with 95% bootstrap CIs and a report.html."""
    outcome = api.evaluate(run_dir, data=data, images=images, out_dir=out, n_resamples=bootstrap)
    if "classification_report_text" in outcome.metrics:
        typer.echo(outcome.metrics["classification_report_text"])
    typer.echo(f"metrics: {outcome.metrics_path}")
    if outcome.report_path is not None:
        typer.echo(f"report: {outcome.report_path}")


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

    from spinedx.io.atomic import atomic_write_text
    from spinedx.io.output_location import check_output_location

    if out:
        check_output_location(out, folder=False)
    result = api.predict(run_dir, images, boxes)
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
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
    dicom: Annotated[
        bool, typer.Option("--dicom", help="DICOM inputs: also sr.dcm (TID 1500), seg.dcm and overlay.dcm")
    ] = False,
    deid: Annotated[
        bool,
        typer.Option("--deid", help="analyse de-identified copies of DICOM inputs (PS3.15 basic profile)"),
    ] = False,
    uid_map: Annotated[
        Path,
        typer.Option(help="with --deid: JSON file of old -> new UIDs (read and extended; keep it on site)"),
    ] = Path("uid_map.json"),
) -> None:
    """Findings per input with the bundled models: findings.json, overlay.png and report.html.

    An input folder holding several series (DICOM series folders, NIfTI/MHA volumes, images) is a
    study: one findings.json with grades fused per level over every series, plus each series' outputs.
    """
    failed = 0
    for result in api.analyze_iter(inputs, out, task, dicom=dicom, deid=deid, uid_map=uid_map):
        if result.note:
            typer.echo(f"warning: {result.note}", err=True)
        if result.error:
            failed += 1
            typer.echo(f"error: {result.error}", err=True)
        elif result.study is not None:
            study = result.study
            summary = f"study of {study['study']['n_series']} series, {len(study['levels'])} levels fused"
            typer.echo(json.dumps(study) if as_json else f"{result.path}: {summary} -> {result.out_dir}")
        elif as_json:
            typer.echo(json.dumps(result.findings.model_dump(mode="json", by_alias=True)))
        else:
            typer.echo(f"{result.path}: {len(result.findings.discs)} discs -> {result.out_dir}")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("evaluate-discs")
def evaluate_discs(
    data: Annotated[
        Path,
        typer.Option(
            help="folder laid out like spider-sagittal (series/discs/gradings CSVs, images/) or "
            "lumbar515-sagittal (series/boxes/pfirrmann CSVs, images/)"
        ),
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
    split: Annotated[
        Path | None,
        typer.Option(
            help="a split.json ({'<cohort>/<patient>': 'fit' | 'select' | 'report'}, e.g. "
            "research/results/split.json): score only its report patients, which the bundled grader "
            "was trained without"
        ),
    ] = None,
) -> None:
    """Localisation, levels and grades of the MRI disc models against reference annotations."""
    outcome = api.evaluate_discs(data, out, cv_run=cv_run, n_resamples=bootstrap, split=split)
    typer.echo(json.dumps({"localisation": outcome.metrics["localisation"]}, indent=2, default=float))
    typer.echo(f"metrics: {outcome.metrics_path}\nreport: {outcome.report_path}")


@app.command("evidence-check")
def evidence_check(
    data: Annotated[Path, typer.Option(help="a spider-sagittal or lumbar515-sagittal folder")],
    out: Annotated[Path, typer.Option(help="JSON file for the result")] = Path("runs/evidence-check.json"),
    max_series: Annotated[int | None, typer.Option(help="first N series only")] = None,
    bootstrap: Annotated[
        int, typer.Option(help="bootstrap resamples (over patients) for the 95% CIs")
    ] = 1000,
    split: Annotated[
        Path | None, typer.Option(help="a split.json: check only its report patients (see evaluate-discs)")
    ] = None,
) -> None:
    """Grad-CAM sanity check: heatmap mass in the disc region, trained vs randomised weights vs uniform."""
    result = api.evidence_check(data, out, max_series=max_series, n_resamples=bootstrap, split=split)
    typer.echo(json.dumps(result, indent=2, default=float))


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
    if data is None:
        raise InputError("--data: a folder with images/ and masks/ is required")
    source = run_dir or model
    default_out = (
        Path(run_dir) / "evaluation" if run_dir and Path(run_dir).is_dir() else Path("runs/evaluate-seg")
    )
    outcome = api.evaluate_seg(source, data, out or default_out, n_resamples=bootstrap)
    summary = {
        name: {m: c[m]["estimate"] for m in ("dice", "iou", "hd95")}
        for name, c in outcome.metrics["classes"].items()
    }
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"metrics: {outcome.metrics_path}\nreport: {outcome.report_path}")


@app.command()
def deid(
    in_dir: Annotated[Path, typer.Argument(help="folder of DICOM files (searched recursively)")],
    out_dir: Annotated[
        Path, typer.Argument(help="output folder: <study>/<series>/<instance>.dcm by new UIDs")
    ],
    uid_map: Annotated[
        Path, typer.Option(help="JSON file of old -> new UIDs (read and extended; keep it on site)")
    ] = Path("uid_map.json"),
) -> None:
    """De-identify DICOM files (PS3.15 basic profile); the UID map allows re-identification on site."""
    written = api.deidentify(in_dir, out_dir, uid_map)
    typer.echo(f"wrote {len(written)} de-identified files to {out_dir}; UID map: {uid_map}")


@pacs_app.command("send")
def pacs_send(
    files: Annotated[
        list[Path], typer.Argument(help="DICOM files to send (e.g. sr.dcm seg.dcm overlay.dcm)")
    ],
    to: Annotated[str, typer.Option(help="destination HOST:PORT:AE")],
) -> None:
    """C-STORE files to a PACS; each file that fails is named and the others are still sent."""
    report = api.pacs_send(files, to)
    for result in report.failed:
        typer.echo(f"error: {result.message}", err=True)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(EXIT_BAD_INPUT)


@pacs_app.command("listen")
def pacs_listen(
    port: Annotated[int, typer.Option(help="TCP port of the C-STORE receiver")] = 11112,
    out: Annotated[
        Path, typer.Option(help="where received studies are stored: <study>/<series>/<instance>.dcm")
    ] = Path("pacs-inbox"),
    ae_title: Annotated[str, typer.Option("--ae", help="this receiver's AE title")] = "SPINEDX",
    stable_seconds: Annotated[
        float, typer.Option(help="a study is complete when nothing new arrived for this long")
    ] = 10.0,
    analyze: Annotated[
        Path | None, typer.Option(help="analyse each complete study (with DICOM SR/SEG/SC) into this folder")
    ] = None,
    send_to: Annotated[str | None, typer.Option(help="send the DICOM results to HOST:PORT:AE")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Receive studies by C-STORE; optionally analyse each complete study and send the results back."""
    import time

    listener = api.pacs_listen(port, out, ae_title=ae_title, stable_seconds=stable_seconds,
                               analyze_into=analyze, send_to=send_to, host=host)  # fmt: skip
    typer.echo(f"listening as {ae_title} on {host}:{listener.port}; studies in {out} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        listener.stop()


@pacs_app.command("watch")
def pacs_watch(
    orthanc: Annotated[str, typer.Option(help="Orthanc's URL, e.g. http://127.0.0.1:8042")],
    modality_filter: Annotated[
        str, typer.Option(help="analyse the series of these modalities (comma-separated)")
    ] = "MR",
    send_to: Annotated[
        str,
        typer.Option(help="'stow' (STOW-RS), an AE title (C-STORE to Orthanc's DICOM port) or HOST:PORT:AE"),
    ] = "stow",
    stable_age: Annotated[
        float, typer.Option(help="extra seconds without new instances, on top of Orthanc's StableAge")
    ] = 0.0,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite in --data)")] = None,
    data: Annotated[
        Path, typer.Option(help="the review service's data folder (database, results, UID map)")
    ] = api.DEFAULT_DATA_DIR,
    deid: Annotated[
        bool, typer.Option("--deid", help="de-identify each study first; results go back de-identified")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="handle what is stable now, then exit")] = False,
) -> None:
    """Analyse each new stable Orthanc study and store SR, SEG and SC back; a restart resumes."""
    outcomes = api.pacs_watch(orthanc, modalities=modality_filter.split(","), send_to=send_to,
                              stable_age=stable_age, db=db, data_dir=data, deid=deid, once=once)  # fmt: skip
    typer.echo(f"watching {orthanc} (Ctrl-C stops)" if not once else f"reading {orthanc}'s changes")
    failed = 0
    try:
        for outcome in outcomes:
            if outcome.status == "failed":
                failed += 1
                typer.echo(f"error: study {outcome.orthanc_id}: {outcome.detail}", err=True)
            else:
                typer.echo(f"study {outcome.orthanc_id}: {outcome.detail}")
    except KeyboardInterrupt:
        typer.echo("stopped; a study cut short is analysed again on the next start", err=True)
        return
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="address to listen on (other than loopback only with SPINEDX_TOKEN)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    db: Annotated[
        str | None,
        typer.Option(help="database URL (default: SQLite in --data), e.g. postgresql+psycopg://user@host/db"),
    ] = None,
    data: Annotated[
        Path, typer.Option(help="folder for uploads, results and the default database")
    ] = api.DEFAULT_DATA_DIR,
    keep_phi: Annotated[
        bool, typer.Option("--keep-phi", help="store DICOM uploads without de-identifying them")
    ] = False,
    workers: Annotated[int, typer.Option(help="analysis worker threads (they share one set of models)")] = 1,
    max_queued: Annotated[
        int, typer.Option(help="uploads waiting for analysis before new ones get 503")
    ] = 64,
) -> None:
    """The review service and viewer: upload studies, read the findings, accept or correct them."""
    api.serve(host, port, db=db, data_dir=data, keep_phi=keep_phi, workers=workers, max_queued=max_queued)


@reviews_app.command("export")
def reviews_export(
    out: Annotated[Path, typer.Option(help="output folder (spider-sagittal layout)")],
    since: Annotated[
        str | None, typer.Option(help="only studies reviewed since this date (ISO 8601)")
    ] = None,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite in --data)")] = None,
    data: Annotated[Path, typer.Option(help="the folder `spinedx serve` used")] = api.DEFAULT_DATA_DIR,
) -> None:
    """Reviewed studies as training data, with the reviewers' corrections, for `spinedx train`."""
    summary = api.export_reviews(out, since=since, db=db, data_dir=data)
    typer.echo(
        f"wrote {summary.studies} reviewed studies ({summary.discs} discs; {summary.skipped_discs} "
        f"rejected or ungraded discs left out) to {summary.out_dir}"
    )


@app.command("tasks")
def list_tasks(
    as_json: Annotated[
        bool, typer.Option("--json", help="machine-readable description of every task")
    ] = False,
) -> None:
    """The clinical tasks: what each finds, its recipe, bundled model files and model card."""
    described = api.tasks()
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    for task in described:
        typer.echo(f"{task['name']}: {task['summary']}")
        typer.echo(f"  findings: {', '.join(task['findings'])}")
        if task["trained_by"]:
            typer.echo(f"  trained by: spinedx train <recipe with task: {task['trained_by']}>")
        for model in task["bundled"]:
            state = (
                f"{model['file']} (sha256 {model['sha256'][:12]}…)" if model.get("file") else "not bundled"
            )
            typer.echo(f"  bundled: {model['name']} -> {state}")
        if task["model_card"]:
            typer.echo(f"  model card: {task['model_card']}")


def main() -> None:
    # spinedx's own progress lines; other libraries (pynetdicom, highdicom, torch) only warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("spinedx").setLevel(logging.INFO)
    try:
        app()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        # The collection at interpreter exit walks every object torch created (~0.4 s of a one-slice
        # analyze); they are about to be freed with the process anyway.
        gc.freeze()
