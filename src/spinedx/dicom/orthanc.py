"""Orthanc bridge: analyse each new stable study of an Orthanc server and store the results back in it.

:class:`OrthancWatcher` follows Orthanc's change feed (``GET /changes``). For each ``StableStudy``
change (Orthanc's own rule: no new instance for ``StableAge`` seconds; a study may arrive over
several associations, so only a quiet period says it is complete) whose series include one of
the wanted modalities, it

1. claims the study in the store (:mod:`spinedx.store.pacs_jobs`), so that it is analysed once;
2. pulls those series over DICOMweb WADO-RS (dicomweb-client), optionally de-identifying them
   (PS3.15 basic profile, one UID map in the data folder for re-identification on site);
3. analyses them here, in the watcher's process: never in an Orthanc callback or Lua script,
   where a long analysis would stall Orthanc;
4. writes SR, SEG and Secondary Capture (:func:`spinedx.dicom.write_dicom_results`) and stores
   them back with STOW-RS, or with C-STORE to an AE title, then checks with QIDO-RS that Orthanc
   holds every object (Orthanc can answer a STOW-RS request and store nothing: dicomweb-client
   issue 42);
5. marks the study done (with the SOP Instance UIDs sent) or failed with a one-line reason.

A restart neither repeats nor loses work: the position in the change feed is saved only past
changes that were dealt with, studies left running by a crash are queued again on start (and
then analysed once), done and failed studies are never claimed again. One watcher per database.

Log lines and recorded reasons name studies by Orthanc's ID (a hash) and series by their place
in the study, never by patient names, IDs or DICOM UIDs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from spinedx.dicom import write_dicom_results
from spinedx.dicom.codes import MANUFACTURER
from spinedx.dicom.deid import deidentify_tree
from spinedx.dicom.pacs import parse_destination, send_files
from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.pipelines.analyze import analyze_inputs
from spinedx.store import Store, pacs_jobs
from spinedx.tasks import analysis_tasks, get_task

__all__ = ["STOW", "DestinationUnreachable", "OrthancWatcher", "StudyOutcome", "analysable_modalities"]

log = logging.getLogger(__name__)

STOW = "stow"
"""``send_to`` value: store results with DICOMweb STOW-RS."""
CHANGES_PAGE = 100
# dicomweb-client switches to chunked transfer encoding above its chunk size, and Orthanc then
# answers STOW-RS without storing anything (dicomweb-client issue 42): results go in one
# request with a Content-Length, and a study's results are far below this bound.
MAX_STOW_BYTES = 1 << 31
_ORTHANC_TIME = "%Y%m%dT%H%M%S"
_QIDO_SOP_INSTANCE_UID = "00080018"


def analysable_modalities() -> tuple[str, ...]:
    """DICOM Modality values some analysis task reads (the default filter)."""
    return tuple(sorted({modality for task in analysis_tasks() for modality in task.modalities}))


@dataclass(frozen=True)
class StudyOutcome:
    """What the watcher did with one study: ``status`` is done or failed; ``detail`` is one line."""

    orthanc_id: str
    status: str
    detail: str


@functools.cache
def _analyzer(task_name: str):
    """The bundled models of a task, loaded once per process and kept for every later study."""
    return get_task(task_name).load("analyzer").bundled()


def _task_for(modality: str) -> str | None:
    return next((task.name for task in analysis_tasks() if modality in task.modalities), None)


class DestinationUnreachable(Exception):
    """The C-STORE destination refused or did not answer the association: not the study's fault."""


# Failures of the network rather than of a study: the study is queued again and retried.
_UNREACHABLE = (requests.ConnectionError, requests.Timeout, DestinationUnreachable)


def _one_line_reason(stage: str, exc: BaseException) -> str:
    """Why a study failed, without identifiers: HTTP errors carry URLs made of study UIDs."""
    if isinstance(exc, InputError):
        return f"{stage}: {exc}"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"{stage}: Orthanc answered HTTP {exc.response.status_code}"
    return f"{stage}: {type(exc).__name__}"


class _Orthanc:
    """Orthanc's REST API and its DICOMweb plugin over one HTTP session."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"--orthanc: expected an http(s) URL such as http://127.0.0.1:8042, got {url!r}")
        self.session = requests.Session()
        if parts.username:
            self.session.auth = (parts.username, parts.password or "")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.host = parts.hostname
        self.timeout = timeout
        self.dicomweb = DICOMwebClient(
            url=f"{self.url}/dicom-web", session=self.session, timeout=timeout, chunk_size=MAX_STOW_BYTES
        )

    def get_text(self, path: str, **params: Any) -> str:
        response = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return json.loads(self.get_text(path, **params))

    def system(self) -> dict[str, Any]:
        try:
            return self.get("/system")
        except requests.RequestException as exc:
            raise InputError(f"--orthanc: no Orthanc answers at {self.url} ({type(exc).__name__})") from None


class _Cursor:
    """The change-feed position for one Orthanc, in a small JSON file of the data folder."""

    def __init__(self, folder: Path, orthanc_url: str) -> None:
        digest = hashlib.sha256(orthanc_url.encode()).hexdigest()[:16]
        self.path = folder / f"orthanc-changes-{digest}.json"
        self.orthanc_url = orthanc_url

    def load(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["seq"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"{self.path}: damaged change-feed position; delete it to re-read the feed"
            ) from None

    def save(self, seq: int) -> None:
        atomic_write_text(self.path, json.dumps({"orthanc": self.orthanc_url, "seq": seq}) + "\n")


class OrthancWatcher:
    """Analyse the stable studies of the Orthanc at ``orthanc_url``; see the module docstring.

    ``send_to`` is ``"stow"`` (STOW-RS to the same Orthanc), an AE title (C-STORE to that AE at
    Orthanc's host and DICOM port) or ``HOST:PORT:AE`` (C-STORE elsewhere; not checked by QIDO).
    ``stable_age`` adds a quiet time of its own (seconds since the study's last new instance, on
    Orthanc's clock) to Orthanc's ``StableAge``. Work files go under ``data_dir/pacs``.
    """

    def __init__(
        self,
        orthanc_url: str,
        store: Store,
        *,
        modalities: tuple[str, ...] | None = None,
        send_to: str = STOW,
        stable_age: float = 0.0,
        deid: bool = False,
        poll_seconds: float = 2.0,
        timeout: float = 60.0,
    ) -> None:
        if stable_age < 0:
            raise InputError(f"--stable-age: must not be negative, got {stable_age}")
        self.orthanc = _Orthanc(orthanc_url, timeout)
        self.store = store
        self.modalities = tuple(
            m.strip().upper() for m in (modalities or analysable_modalities()) if m.strip()
        )
        if not self.modalities:
            raise InputError("--modality-filter: name at least one DICOM modality, e.g. MR")
        self.stable_age = stable_age
        self.deid = deid
        self.poll_seconds = poll_seconds
        self.folder = Path(store.data_dir) / "pacs"
        self.cursor = _Cursor(self.folder, self.orthanc.url)
        system = self.orthanc.system()
        self.destination: tuple[str, int, str] | None = None  # None: STOW-RS
        self.verify = True  # QIDO-RS can see only what went to this Orthanc
        if send_to.lower() != STOW:
            if ":" in send_to:
                self.destination = parse_destination(send_to)
                self.verify = False
            else:
                self.destination = parse_destination(f"{self.orthanc.host}:{system['DicomPort']}:{send_to}")

    # --- the loop
    def watch(self, once: bool = False) -> Iterator[StudyOutcome]:
        """Yield each study's outcome as it is done; ``once``: stop when the feed is read to its end.

        Studies left running by an earlier process are queued again first. Ctrl-C (or any
        interruption) during a study puts it back in the queue for the next start. When Orthanc
        or the C-STORE destination stops answering, the study in progress is queued again and the
        watcher keeps trying (``once``: a one-line :class:`InputError`); an HTTP error outside a
        study is an InputError.
        """
        requeued = pacs_jobs.requeue_interrupted(self.store)
        if requeued:
            log.info("%d interrupted stud(y/ies) queued again", requeued)
        while True:
            try:
                yield from self.poll()
            except _UNREACHABLE as exc:
                if isinstance(exc, DestinationUnreachable):
                    problem = f"--send-to: {exc}"
                else:
                    problem = f"--orthanc: {self.orthanc.url} stopped answering ({type(exc).__name__})"
                if once:
                    raise InputError(problem) from None
                log.warning("%s; trying again", problem)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                raise InputError(f"--orthanc: {self.orthanc.url} answered HTTP {status}") from None
            if once:
                return
            time.sleep(self.poll_seconds)

    def poll(self) -> Iterator[StudyOutcome]:
        """Read the change feed from the saved position to its end, handling each stable study."""
        cursor = self.cursor.load()
        last = self.orthanc.get("/changes", last="")["Last"]
        if cursor > last:  # Orthanc's database was replaced: its feed starts again
            log.warning(
                "Orthanc's change feed restarted (at %d, was %d): reading it from the start", last, cursor
            )
            cursor = 0
        since, deferred = cursor, False
        while True:
            page = self.orthanc.get("/changes", since=since, limit=CHANGES_PAGE)
            for change in page["Changes"]:
                if change["ChangeType"] == "StableStudy":
                    outcome, ready = self._consider(change["ID"])
                    if outcome is not None:
                        yield outcome
                    # The position never passes a study that must be looked at again.
                    deferred = deferred or not ready
                if not deferred:
                    cursor = change["Seq"]
            if cursor != self.cursor.load():
                self.cursor.save(cursor)
            since = page["Last"]
            if page["Done"] or not page["Changes"]:
                return

    def _consider(self, orthanc_id: str) -> tuple[StudyOutcome | None, bool]:
        """Handle one stable study if it is due; the flag is False when it must be seen again later."""
        job = pacs_jobs.status_of(self.store, orthanc_id)
        if job is not None and job.status in (pacs_jobs.DONE, pacs_jobs.FAILED):
            return None, True
        try:
            study = self.orthanc.get(f"/studies/{orthanc_id}")
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None, True  # deleted since
            raise
        if not study.get("IsStable", True):
            return None, True  # new instances came in: Orthanc will report it stable again
        series = [self.orthanc.get(f"/series/{series_id}") for series_id in study["Series"]]
        wanted = [
            (number, item["MainDicomTags"])
            for number, item in enumerate(series, start=1)
            if item["MainDicomTags"].get("Modality", "").upper() in self.modalities
            # spinedx's own results never go back into an analysis
            and item["MainDicomTags"].get("Manufacturer") != MANUFACTURER
        ]
        if not wanted:
            log.debug(
                "study %s: no series of modality %s; not analysed", orthanc_id, ",".join(self.modalities)
            )
            return None, True
        if self.stable_age and self._quiet_seconds(study) < self.stable_age:
            return None, False
        if not pacs_jobs.claim(self.store, orthanc_id):
            return None, True
        return self._process(orthanc_id, study["MainDicomTags"]["StudyInstanceUID"], wanted), True

    def _quiet_seconds(self, study: dict[str, Any]) -> float:
        now = datetime.strptime(self.orthanc.get_text("/tools/now").strip(), _ORTHANC_TIME)
        return (now - datetime.strptime(study["LastUpdate"], _ORTHANC_TIME)).total_seconds()

    # --- one study
    def _process(self, orthanc_id: str, study_uid: str, series: list[tuple[int, dict]]) -> StudyOutcome:
        work = self.folder / "work" / orthanc_id
        results = self.folder / "results" / orthanc_id
        for folder in (work, results):  # what a crashed attempt left
            shutil.rmtree(folder, ignore_errors=True)
        stage = "pull (WADO-RS)"
        try:
            sources = self._pull(study_uid, series, work / "input")
            if self.deid:
                stage = "de-identify"
                sources = self._deidentify(work)
            stage = "analyse"
            analysed, errors = self._analyse(sources, results)
            stage = "store results"
            outputs = self._send(analysed, results)
        except KeyboardInterrupt:
            pacs_jobs.requeue_interrupted(self.store)  # analysed again on the next start
            raise
        except _UNREACHABLE:
            pacs_jobs.requeue_interrupted(self.store)  # not the study's fault: tried again later
            raise
        except Exception as exc:  # noqa: BLE001 - one bad study is recorded and the watcher goes on
            reason = _one_line_reason(stage, exc)
            pacs_jobs.mark_failed(self.store, orthanc_id, reason)
            log.debug("study %s failed: %s", orthanc_id, reason)  # the caller reports outcomes
            return StudyOutcome(orthanc_id, pacs_jobs.FAILED, reason)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the pulled images: Orthanc keeps them
        pacs_jobs.mark_done(self.store, orthanc_id, outputs + [{"series": s, "error": e} for s, e in errors])
        how = "STOW-RS" if self.destination is None else f"C-STORE to {self.destination[2]}"
        detail = (
            f"{len(analysed)} series analysed, {len(outputs)} objects stored by {how}"
            + (" and found by QIDO-RS" if self.verify else "")
            + (f"; {len(errors)} series failed ({errors[0][1]})" if errors else "")
        )
        log.debug("study %s done: %s", orthanc_id, detail)
        return StudyOutcome(orthanc_id, pacs_jobs.DONE, detail)

    def _pull(self, study_uid: str, series: list[tuple[int, dict]], into: Path) -> list[Path]:
        folders = []
        for number, tags in series:
            folder = into / f"series-{number}"
            folder.mkdir(parents=True)
            datasets = self.orthanc.dicomweb.retrieve_series(study_uid, tags["SeriesInstanceUID"])
            for index, dataset in enumerate(datasets, start=1):
                dataset.save_as(folder / f"{index:05d}.dcm", enforce_file_format=True)
            folders.append(folder)
        return folders

    def _deidentify(self, work: Path) -> list[Path]:
        """The pulled series, de-identified into ``work/deid/<study>/<series>/`` (new UIDs)."""
        written = deidentify_tree(work / "input", work / "deid", self.folder / "uid_map.json")
        return sorted({path.parent for path in written})

    def _analyse(self, sources: list[Path], results: Path) -> tuple[list[Path], list[tuple[str, str]]]:
        """Each series analysed with DICOM output; returns the result folders and (series, error) pairs."""
        analysed, errors = [], []
        for source in sources:
            modality = str(
                pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True).get("Modality", "")
            )
            task = _task_for(modality.upper())
            if task is None:
                errors.append((source.name, f"no analysis task reads Modality {modality or '(none)'}"))
                continue
            for result in analyze_inputs(
                [source], results, task, _analyzer(task), finish=write_dicom_results
            ):
                if result.error:
                    # The error names the work folder, which is named without identifiers.
                    errors.append((source.name, result.error))
                else:
                    analysed.append(result.out_dir)
        if not analysed:
            raise InputError(f"no series could be analysed ({errors[0][1]})")
        return analysed, errors

    def _send(self, analysed: list[Path], results: Path) -> list[dict[str, str]]:
        files = [path for folder in analysed for path in sorted(folder.glob("*.dcm"))]
        datasets = [pydicom.dcmread(path) for path in files]
        if self.destination is None:
            answer = self.orthanc.dicomweb.store_instances(datasets)
            if answer.get("FailedSOPSequence"):
                raise InputError(f"Orthanc refused {len(answer.FailedSOPSequence)} of {len(files)} objects")
        else:
            try:
                report = send_files(files, *self.destination)
            except InputError as exc:  # no association: the destination, not the study
                raise DestinationUnreachable(str(exc)) from None
            if not report.ok:
                raise InputError(report.summary())
        if self.verify:
            self._check_stored(datasets)
        return [
            {"file": str(path.relative_to(results)), "sop_instance_uid": str(dataset.SOPInstanceUID)}
            for path, dataset in zip(files, datasets, strict=True)
        ]

    def _check_stored(self, datasets: list[pydicom.Dataset]) -> None:
        """QIDO-RS: every object sent is in Orthanc, in its study and series."""
        missing = 0
        for dataset in datasets:
            found = self.orthanc.dicomweb.search_for_instances(
                study_instance_uid=str(dataset.StudyInstanceUID),
                series_instance_uid=str(dataset.SeriesInstanceUID),
                search_filters={"SOPInstanceUID": str(dataset.SOPInstanceUID)},
            )
            uids = {item.get(_QIDO_SOP_INSTANCE_UID, {}).get("Value", [None])[0] for item in found}
            missing += str(dataset.SOPInstanceUID) not in uids
        if missing:
            raise InputError(
                f"Orthanc accepted the results but QIDO-RS finds {missing} of {len(datasets)} missing"
            )
