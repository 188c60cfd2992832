"""The analysis worker pool: models loaded once per process, a bounded queue, nothing lost on a restart.

A study is persisted as ``queued`` before it is put on the queue. On start the pool re-queues
every study still ``queued`` or left ``running`` by a process that died, oldest first, so a killed
server finishes its queue once restarted. The queue is bounded for new uploads (:meth:`reserve`
says no when it is full, and the API answers 503); re-queued studies are always taken.

Each study's folder (``<data>/studies/<id>/``) holds its input, ``result/`` (the analysis folder:
findings.json, overlay.png, masks.png, report.html, heatmaps) and ``slices/`` (the input's sagittal
stack as PNGs, 16-bit when the source has more than 8 bits, with ``slices.json``).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.io.limits import MIN_SPINE_SIDE
from spinedx.io.output_location import atomic_directory
from spinedx.io.volumes import SagittalSlice, read_sagittal, read_sagittal_stack
from spinedx.pipelines.analyze import analyze_inputs, resolve_task
from spinedx.store import Store, Study
from spinedx.tasks import get_task

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
EIGHT_BIT_KINDS = ("png", "jpeg")
DICOM_KINDS = ("dicom", "zip")  # the task comes from the Modality tag
DEFAULT_TASK = "mri-discs"
_STOP = None

# One set of models per process, whichever pool (or app) asks: loading them takes seconds.
_PIPELINES: dict[str, object] = {}
_PIPELINES_LOCK = threading.Lock()


def task_pipeline(task: str):
    """The analysis pipeline of ``task`` with its bundled models, loaded on first use."""
    with _PIPELINES_LOCK:
        if task not in _PIPELINES:
            log.info("loading the %s models", task)
            _PIPELINES[task] = get_task(task).load("analyzer").bundled()
        return _PIPELINES[task]


def study_dir(data_dir: Path, study_id: str) -> Path:
    return data_dir / "studies" / study_id


class AnalysisPool:
    """``workers`` threads analysing queued studies with models shared by the whole process."""

    def __init__(self, store: Store, data_dir: Path, *, workers: int = 1, max_queued: int = 64):
        self.store = store
        self.data_dir = data_dir
        self.workers = workers
        self.max_queued = max_queued
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        """Re-queue unfinished studies and start the workers; returns how many were re-queued."""
        with self.store.session() as session:
            unfinished = session.scalars(
                select(Study.id).where(Study.status.in_((QUEUED, RUNNING))).order_by(Study.created)
            ).all()
            for study in session.scalars(select(Study).where(Study.status == RUNNING)):
                study.status, study.progress = QUEUED, 0.0
        for study_id in unfinished:
            with self._lock:
                self._waiting += 1
            self._queue.put(study_id)
        self._threads = [
            threading.Thread(target=self._work, name=f"spinedx-analysis-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        if unfinished:
            log.info("re-queued %d unfinished studies", len(unfinished))
        return len(unfinished)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the workers finish the study in hand and stop; queued ones stay queued in the database."""
        with self._queue.mutex:
            self._queue.queue.clear()
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def reserve(self) -> bool:
        """Take a place in the queue for a new upload; False when it is full."""
        with self._lock:
            if self._waiting >= self.max_queued:
                return False
            self._waiting += 1
            return True

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` for an upload that was refused."""
        with self._lock:
            self._waiting -= 1

    def submit(self, study_id: str) -> None:
        """Queue a study already stored as queued, in a place taken by :meth:`reserve`."""
        self._queue.put(study_id)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    def _work(self) -> None:
        while (study_id := self._queue.get()) is not _STOP:
            with self._lock:
                self._waiting -= 1
            try:
                self._analyse(study_id)
            except Exception:
                # Logged by id only: the exception text may quote an input's content.
                log.exception("study %s: analysis failed unexpectedly", study_id)
                self._update(study_id, status=FAILED, error="internal error during analysis", progress=1.0)

    def _update(self, study_id: str, **values) -> None:
        with self.store.session() as session:
            study = session.get(Study, study_id)
            for key, value in values.items():
                setattr(study, key, value)

    def _analyse(self, study_id: str) -> None:
        with self.store.session() as session:
            study = session.get(Study, study_id)
            if study is None or study.status not in (QUEUED, RUNNING):
                return
            study.status, study.progress, study.error = RUNNING, 0.1, None
            input_path, kind, requested = self.data_dir / study.input_path, study.kind, study.task
        started = time.perf_counter()
        folder = study_dir(self.data_dir, study_id)
        shutil.rmtree(folder / "result", ignore_errors=True)  # a half-written one from a killed run
        try:
            image = read_sagittal(input_path, min_side=MIN_SPINE_SIDE)
            task = resolve_task(image, requested or (None if kind in DICOM_KINDS else DEFAULT_TASK))
            pipeline = task_pipeline(task)
            self._update(study_id, task=task, progress=0.3)
            (result,) = analyze_inputs([input_path], folder / "result", task=task, pipeline=pipeline)
            if result.error is not None:
                raise InputError(result.error)
            self._update(study_id, progress=0.8)
            _write_slices(input_path, folder / "slices", result.findings.input.slice_index, kind)
        except InputError as exc:
            # Messages name the stored input; the study's own folder is no news to the client.
            reason = str(exc).replace(f"{input_path}: ", "").replace(str(input_path), "the input")
            log.info("study %s: analysis refused the input", study_id)
            self._update(study_id, status=FAILED, error=reason, progress=1.0)
            return
        findings = json.loads((result.out_dir / "findings.json").read_text())
        self._update(
            study_id,
            status=DONE,
            progress=1.0,
            findings=findings,
            model_name=findings["model"]["name"],
            model_version=findings["model"]["version"],
            result_path=str(result.out_dir.relative_to(self.data_dir)),
        )
        log.info("study %s: analysed in %.2f s", study_id, time.perf_counter() - started)


def _png(image: SagittalSlice, sixteen_bit: bool) -> Image.Image:
    pixels = np.clip(image.pixels, 0.0, 1.0)
    if sixteen_bit:
        return Image.fromarray(np.round(pixels * 65535).astype(np.uint16))
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8))


def _is_deep_image(path: Path) -> bool:
    """True for a PNG with more than 8 bits per sample (16-bit grayscale)."""
    with Image.open(path) as image:
        return image.mode in ("I", "I;16", "I;16B", "I;16L")


def _write_slices(input_path: Path, target: Path, analysed_slice: int | None, kind: str) -> None:
    """The input's whole sagittal stack as ``target/<k>.png`` plus ``slices.json`` (count, analysed index, size)."""
    first = read_sagittal(input_path)
    stack = [first] if first.n_slices is None else read_sagittal_stack(input_path, n=first.n_slices)
    analysed_index = next(
        (k for k, image in enumerate(stack) if image.slice_index == analysed_slice), len(stack) // 2
    )
    deep = kind not in EIGHT_BIT_KINDS or _is_deep_image(input_path)
    with atomic_directory(target) as work:
        for k, image in enumerate(stack):
            _png(image, sixteen_bit=deep).save(work / f"{k}.png")
        spacing = first.pixel_spacing_mm
        atomic_write_text(
            work / "slices.json",
            json.dumps(
                {
                    "count": len(stack),
                    "analysed_index": analysed_index,
                    "width": first.width,
                    "height": first.height,
                    "pixel_spacing_mm": list(spacing) if spacing else None,
                }
            ),
        )
