"""The Python API behind every CLI command, in one place for notebooks and scripts.

>>> from spinedx import api
>>> api.synth_xray("data/synth-xray", n_images=300)
>>> paths = api.train("configs/xray_lesions.yaml", "runs/xray", overrides=["train.epochs=5"])
>>> api.evaluate(paths["run"]).metrics["macro_avg"]["f1"]  # any task's run folder
>>> api.predict(paths["run"], ["image.png"]).records
>>> [result.findings for result in api.analyze(["slice.png"], "out", task="mri-discs")]
>>> api.evaluate_discs("../shared/data/spider-sagittal", "runs/eval", cv_run="runs/spider_discs").metrics
>>> [task["name"] for task in api.tasks()]

Every recipe trains through :func:`train` (the recipe's ``task`` key picks the schema and the
trainer from :mod:`spinedx.tasks`) and every run folder is scored by :func:`evaluate` (the task
recorded with the run picks the evaluator); :func:`evaluate_discs` and :func:`evaluate_seg` score
the bundled models, or a given one, on a data folder.
Modules are imported when a function runs, so ``import spinedx.api`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import InputError
from spinedx.io.output_location import check_output_location

if TYPE_CHECKING:
    from spinedx.data.check import DatasetReport
    from spinedx.dicom.orthanc import StudyOutcome
    from spinedx.dicom.pacs import PacsListener, SendReport
    from spinedx.pipelines.analyze import AnalyzedInput
    from spinedx.pipelines.mri_discs.evaluate import DiscEvaluation
    from spinedx.tasks.canal_stenosis.evaluate import StenosisEvaluation
    from spinedx.tasks.spine_seg.evaluate import SegEvaluation
    from spinedx.tasks.xray_lesions.evaluate import EvaluationOutcome
    from spinedx.tasks.xray_lesions.predict import Predictions


def _check_resamples(n_resamples: int) -> None:
    """Option values are checked before any work starts."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 0:
        raise InputError(f"--bootstrap: expected a number of resamples >= 0, got {n_resamples!r}")


def tasks() -> list[dict[str, Any]]:
    """Every task of the registry: findings, recipe, train/evaluate functions, bundled files, model card."""
    from spinedx.tasks import TASKS

    return [task.describe() for task in TASKS]


def synth_xray(out_dir: str | Path, n_images: int = 300, seed: int = 42, image_size: int = 512) -> Path:
    """Synthetic radiographs; returns the annotation CSV."""
    from spinedx.synth.xray import generate_xray_dataset

    check_output_location(Path(out_dir))
    return generate_xray_dataset(Path(out_dir), n_images=n_images, seed=seed, image_size=image_size)


def synth_mri(out_dir: str | Path, n_patients: int = 40, seed: int = 42, image_size: int = 384) -> Path:
    """Synthetic sagittal lumbar MRI in the spider-sagittal layout (with masks); returns the folder."""
    from spinedx.synth.mri import generate_mri_dataset

    check_output_location(Path(out_dir))
    return generate_mri_dataset(
        Path(out_dir), n_patients=n_patients, seed=seed, image_size=(image_size, image_size)
    )


def check(csv: str | Path, images: str | Path, progress: bool = False) -> DatasetReport:
    """Annotations checked against their images (what `spinedx data check` prints)."""
    from spinedx.data.check import check_dataset

    return check_dataset(csv, images, progress=progress)


def show(csv: str | Path, images: str | Path, out_dir: str | Path, image_ids: list[str] | None = None,
         limit: int | None = None):  # fmt: skip
    """Annotated boxes drawn on the images; returns what was written and what was skipped."""
    from spinedx.data.show import render_annotations
    from spinedx.io.vindr import read_vindr_csv

    return render_annotations(read_vindr_csv(Path(csv)), Path(images), Path(out_dir), image_ids=image_ids,
                              limit=limit)  # fmt: skip


def load_recipe(config: str | Path, overrides: list[str] | None = None) -> Any:
    """The recipe at ``config`` validated by its task's schema (``overrides``: ``section.key=value``)."""
    from spinedx.recipes import read_recipe
    from spinedx.tasks import parse_recipe

    return parse_recipe(read_recipe(Path(config), overrides), source=str(config))


def train(config: str | Path, run_dir: str | Path | None = None, overrides: list[str] | None = None,
          bundle: bool = False) -> dict[str, Path]:  # fmt: skip
    """Train (or resume) any recipe; returns what it wrote (name -> path). ``bundle`` installs the
    trained models as the package's bundled models (tasks that ship models)."""
    from spinedx.models.registry import BUNDLED_DIR
    from spinedx.tasks import get_task

    recipe = load_recipe(config, overrides)
    trainer = get_task(recipe.task).load("train")
    target = Path(run_dir) if run_dir else Path("runs") / recipe.name
    check_output_location(target)
    return trainer(recipe, target, register_into=BUNDLED_DIR if bundle else None)


def evaluate(run_dir: str | Path, data: str | Path | None = None, images: str | Path | None = None,
             out_dir: str | Path | None = None, n_resamples: int = 1000,
             ) -> EvaluationOutcome | DiscEvaluation | SegEvaluation | StenosisEvaluation:  # fmt: skip
    """A training run folder of any task scored by its task's evaluator (``.metrics``, ``.metrics_path``,
    ``.report_path``): xray-lesions on its held-out test studies (or ``data`` CSV + ``images``),
    mri-discs end to end with its fold models (on ``data`` or its recipe's folder), spine-seg on
    ``data`` (or its cross-validation figures), canal-stenosis its cross-validation figures."""
    from spinedx.recipes import recorded_recipe
    from spinedx.tasks import DEFAULT_RECIPE_TASK, get_task

    _check_resamples(n_resamples)
    if out_dir is not None:
        check_output_location(Path(out_dir))
    task = get_task(recorded_recipe(Path(run_dir)).get("task", DEFAULT_RECIPE_TASK))
    return task.load("evaluate")(Path(run_dir), data=Path(data) if data else None,
                                 images=Path(images) if images else None,
                                 out_dir=Path(out_dir) if out_dir else None, n_resamples=n_resamples)  # fmt: skip


def predict(
    run_dir: str | Path, images: list[str | Path], boxes_csv: str | Path | None = None
) -> Predictions:
    """Class probabilities per box (or per whole image) with a radiograph classifier run."""
    from spinedx.io.vindr import read_vindr_csv
    from spinedx.tasks.xray_lesions.model import TrainedClassifier
    from spinedx.tasks.xray_lesions.predict import predict_images

    boxes = read_vindr_csv(Path(boxes_csv)) if boxes_csv else None
    return predict_images(TrainedClassifier.load(Path(run_dir)), [Path(p) for p in images], boxes)


def analyze_iter(inputs: list[str | Path], out_dir: str | Path, task: str | None = None,
                 dicom: bool = False, deid: bool = False,
                 uid_map: str | Path = "uid_map.json") -> Iterator[AnalyzedInput]:  # fmt: skip
    """Like :func:`analyze`, yielding each input's result as soon as it is written."""
    from spinedx.pipelines.analyze import analyze_inputs

    check_output_location(Path(out_dir))
    finish = None
    if dicom:  # the DICOM writers load highdicom: only when asked
        from spinedx.dicom import write_dicom_results

        finish = write_dicom_results
    if deid:
        from spinedx.dicom.deid_inputs import analyze_deidentified

        return analyze_deidentified([Path(p) for p in inputs], Path(out_dir), Path(uid_map), task, finish)
    return analyze_inputs([Path(p) for p in inputs], Path(out_dir), task, finish=finish)


def analyze(inputs: list[str | Path], out_dir: str | Path, task: str | None = None,
            dicom: bool = False, deid: bool = False,
            uid_map: str | Path = "uid_map.json") -> list[AnalyzedInput]:  # fmt: skip
    """Findings per input with the bundled models (files as ``spinedx analyze`` writes them);
    an input that fails has ``error`` set and the others go on. ``dicom``: also the DICOM SR, SEG
    and Secondary Capture of each DICOM input, next to its findings.json. ``deid``: DICOM inputs
    are de-identified first (PS3.15 basic profile, copies in ``out_dir/deidentified-inputs``, UID
    map in ``uid_map``) and only the copies are analysed."""
    return list(analyze_iter(inputs, out_dir, task, dicom, deid, uid_map))


def deidentify(in_dir: str | Path, out_dir: str | Path, uid_map: str | Path) -> list[Path]:
    """DICOM PS3.15 basic-profile de-identification of every DICOM file under ``in_dir`` into
    ``out_dir``; the old -> new UID map is kept in ``uid_map`` (JSON) for re-identification on site."""
    from spinedx.dicom.deid import deidentify_tree

    check_output_location(Path(out_dir))
    return deidentify_tree(Path(in_dir), Path(out_dir), Path(uid_map))


def evaluate_discs(data: str | Path, out_dir: str | Path, cv_run: str | Path | None = None,
                   n_resamples: int = 1000, split: str | Path | None = None) -> DiscEvaluation:  # fmt: skip
    """End-to-end disc evaluation against a spider-sagittal or lumbar515-sagittal folder (bundled
    models, or for spider-sagittal the fold models of ``cv_run`` for out-of-fold figures); with
    ``split`` (a split.json) only on its report patients."""
    from spinedx.pipelines.mri_discs.evaluate import evaluate_discs as run_evaluation

    _check_resamples(n_resamples)
    check_output_location(Path(out_dir))
    return run_evaluation(Path(data), Path(out_dir), n_resamples=n_resamples,
                          cv_run=Path(cv_run) if cv_run else None,
                          split=Path(split) if split else None)  # fmt: skip


def evidence_check(data: str | Path, out_file: str | Path, max_series: int | None = None,
                   n_resamples: int = 1000, split: str | Path | None = None) -> dict:  # fmt: skip
    """Grad-CAM sanity check of the bundled grader on a spider- or lumbar515-sagittal folder: heatmap
    mass inside the disc region for the trained vs a weight-randomised network vs a uniform map
    (:mod:`spinedx.pipelines.mri_discs.evidence_check`); written as JSON to ``out_file``."""
    import json

    from spinedx.io.atomic import atomic_write_text
    from spinedx.pipelines.mri_discs.evidence_check import evidence_check as run_check

    _check_resamples(n_resamples)
    result = run_check(Path(data), max_series=max_series, n_resamples=n_resamples,
                       split=Path(split) if split else None)  # fmt: skip
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_file), json.dumps(result, indent=2, default=float))
    return result


def evaluate_seg(
    model: str | Path, data: str | Path, out_dir: str | Path, n_resamples: int = 1000
) -> SegEvaluation:
    """A spine segmenter (run folder, weight file or ``"bundled"``) scored on an image/mask folder."""
    from spinedx.tasks.spine_seg.evaluate import evaluate_segmenter

    _check_resamples(n_resamples)
    check_output_location(Path(out_dir))
    return evaluate_segmenter(model, Path(data), Path(out_dir), n_resamples=n_resamples)


def pacs_send(files: list[str | Path], destination: str) -> SendReport:
    """C-STORE ``files`` to ``destination`` (``HOST:PORT:AE``) over one association; each file's
    outcome is in the report (one that fails does not stop the others)."""
    from spinedx.dicom.pacs import parse_destination, send_files

    host, port, ae_title = parse_destination(destination)
    return send_files([Path(f) for f in files], host, port, ae_title)


def pacs_listen(port: int, store_dir: str | Path, *, ae_title: str = "SPINEDX", stable_seconds: float = 10.0,
                analyze_into: str | Path | None = None, send_to: str | None = None,
                host: str = "127.0.0.1") -> PacsListener:  # fmt: skip
    """A started C-STORE receiver storing studies under ``store_dir/<study>/<series>/``.

    With ``analyze_into``, each study is analysed once it is stable (no new instance for
    ``stable_seconds``; a study may come over several associations): every series folder goes
    through ``analyze`` with DICOM output into ``analyze_into/<study>/``, and with ``send_to``
    (``HOST:PORT:AE``) the SR, SEG and Secondary Capture objects are sent back. Stop it with
    ``stop()`` (or use it as a context manager).
    """
    from spinedx.dicom.pacs import listen

    if send_to is not None and analyze_into is None:
        raise InputError("--send-to: results are sent only for analysed studies; give --analyze DIR too")
    if send_to is not None:
        from spinedx.dicom.pacs import parse_destination

        parse_destination(send_to)  # a bad destination is refused now, not after the first study
    if analyze_into is not None:
        check_output_location(Path(analyze_into))
    on_study = None if analyze_into is None else _analyse_received_study(Path(analyze_into), send_to)
    return listen(port, Path(store_dir), ae_title=ae_title, stable_seconds=stable_seconds,
                  on_study_complete=on_study, host=host).start()  # fmt: skip


def _analyse_received_study(analyze_into: Path, send_to: str | None):
    """The listener's callback: analyse a stable study's series with DICOM output, send results back."""
    import logging

    log = logging.getLogger("spinedx.pacs")

    def on_study_complete(study_dir: Path) -> None:
        series = sorted(path for path in study_dir.iterdir() if path.is_dir())
        results = analyze(series, analyze_into / study_dir.name, dicom=True)
        failed = [result for result in results if result.error]
        # Logs carry counts only: paths here are built from the study's UIDs, which are identifiers too.
        log.info("study received: %d series analysed, %d failed", len(results) - len(failed), len(failed))
        if failed:
            from spinedx.io.atomic import atomic_write_text

            report = analyze_into / study_dir.name / "failed.txt"
            report.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(report, "".join(f"{result.error}\n" for result in failed))
        if send_to is not None:
            objects = [
                path for result in results if result.out_dir for path in sorted(result.out_dir.glob("*.dcm"))
            ]
            report = pacs_send(objects, send_to)
            log.info("%s", report.summary())

    return on_study_complete


DEFAULT_DATA_DIR = Path("spinedx-data")
"""The review service's folder (uploads, results, and the SQLite database unless ``--db``)."""


def pacs_watch(orthanc: str, *, modalities: list[str] | None = None, send_to: str = "stow",
               stable_age: float = 0.0, db: str | None = None, data_dir: str | Path = DEFAULT_DATA_DIR,
               deid: bool = False, once: bool = False, poll_seconds: float = 2.0) -> Iterator[StudyOutcome]:  # fmt: skip
    """Analyse each new stable study of the Orthanc at ``orthanc`` and store SR, SEG and SC back.

    ``send_to``: ``"stow"`` (STOW-RS), an AE title (C-STORE to Orthanc's DICOM port) or
    ``HOST:PORT:AE``. What was done per study is kept in the review service's database (``db``,
    default SQLite in ``data_dir``), so a restart neither repeats nor loses work. ``deid``: the
    study is de-identified before analysis and the results go back as a de-identified study (the
    UID map stays in ``data_dir/pacs/uid_map.json``). Yields each study's outcome; ``once`` stops
    when the change feed is read to its end. Orthanc is checked now, before the first study.
    """
    from spinedx.dicom.orthanc import OrthancWatcher
    from spinedx.store import open_store

    check_output_location(Path(data_dir))
    store = open_store(db, Path(data_dir))
    try:
        watcher = OrthancWatcher(orthanc, store, modalities=tuple(modalities) if modalities else None,
                                 send_to=send_to, stable_age=stable_age, deid=deid,
                                 poll_seconds=poll_seconds)  # fmt: skip
    except BaseException:
        store.close()
        raise

    def outcomes() -> Iterator[StudyOutcome]:
        try:
            yield from watcher.watch(once)
        finally:
            store.close()

    return outcomes()


def serve(host: str = "127.0.0.1", port: int = 8000, db: str | None = None,
          data_dir: str | Path = DEFAULT_DATA_DIR, keep_phi: bool = False, workers: int = 1,
          max_queued: int = 64) -> None:  # fmt: skip
    """Run the review service until interrupted; the token is SPINEDX_TOKEN.

    Without SPINEDX_TOKEN the service listens only on loopback, with a random token it logs.
    """
    import logging

    from spinedx.serve.runner import resolve_token, serve
    from spinedx.serve.settings import ServeSettings

    if workers < 1 or max_queued < 1:
        raise InputError("--workers and --max-queued must be at least 1")
    token, generated = resolve_token(host)
    check_output_location(Path(data_dir))
    if generated:
        logging.getLogger("spinedx.serve").warning(
            "SPINEDX_TOKEN not set: this session's token is %s (enter it in the viewer)", token
        )
    settings = ServeSettings(data_dir=Path(data_dir), token=token, db_url=db, keep_phi=keep_phi,
                             workers=workers, max_queued=max_queued)  # fmt: skip
    serve(settings, host, port)


def export_reviews(out_dir: str | Path, since: str | None = None, db: str | None = None,
                   data_dir: str | Path = DEFAULT_DATA_DIR):  # fmt: skip
    """Reviewed MRI studies as spider-sagittal training data in ``out_dir`` (see spinedx.serve.export)."""
    from datetime import UTC, datetime

    from spinedx.serve.export import export_reviews as export
    from spinedx.store import open_store

    when = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise InputError(f"--since: expected a date like 2026-12-01 (ISO 8601), got {since!r}") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not Path(data_dir).is_dir():
        raise InputError(f"--data: {data_dir}: folder not found (the folder `spinedx serve` used)")
    check_output_location(Path(out_dir))
    store = open_store(db, Path(data_dir))
    try:
        return export(store, Path(out_dir), since=when)
    finally:
        store.close()
