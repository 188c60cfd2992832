"""DIMSE PACS bridge for sites without Orthanc: C-STORE out (:func:`send_files`) and in (:func:`listen`).

``send_files`` sends DICOM files to a PACS over one association and reports each file's status;
``listen`` runs a C-STORE SCP that writes each received instance atomically to
``store_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` and calls
``on_study_complete(study_dir)`` once a study has received nothing new for ``stable_seconds``.
A study may arrive over several associations (pynetdicom issue 855), so the end of an association
says nothing about the end of a study: only the stability timer does. The callback runs in a
worker thread of its own, never in pynetdicom's event handler. Nothing here logs patient
identifiers (names, IDs, dates, UIDs): messages name files, hosts, ports, AE titles and statuses.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path

__all__ = ["FileResult", "PacsListener", "SendReport", "listen", "parse_destination", "send_files"]

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
_MAX_CONTEXTS = 128  # the most presentation contexts one association may propose
_STATUS_OK = 0x0000
_WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}
_STATUS_CANNOT_UNDERSTAND = 0xC000
_STATUS_OUT_OF_RESOURCES = 0xA700


def _is_safe_uid(value: object) -> bool:
    """True for a UID made only of digits and dots (so it is safe as one path component)."""
    text = str(value) if value is not None else ""
    return 0 < len(text) <= 64 and _UID_RE.match(text) is not None


def _check_ae_title(ae: str, what: str) -> str:
    if not 0 < len(ae.strip()) <= 16 or "\\" in ae or any(ord(c) < 32 or ord(c) > 126 for c in ae):
        raise InputError(f"{what}: AE title {ae!r} must be 1-16 printable ASCII characters, no backslash")
    return ae.strip()


def parse_destination(text: str) -> tuple[str, int, str]:
    """Parse ``HOST:PORT:AE`` (e.g. ``pacs.local:104:ORTHANC``) into ``(host, port, ae_title)``.

    The host may itself hold colons (an IPv6 address, optionally in brackets); the port is the
    second-last field and the AE title the last. Raises :class:`InputError` on a bad string.
    """
    head, sep1, ae = text.rpartition(":")
    host, sep2, port_text = head.rpartition(":")
    where = f"destination {text!r}"
    if not (sep1 and sep2 and host and ae):
        raise InputError(f"{where}: expected HOST:PORT:AE, e.g. pacs.local:104:ORTHANC")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"{where}: port {port_text!r} must be a number from 1 to 65535")
    return host, int(port_text), _check_ae_title(ae, where)


@dataclass(frozen=True)
class FileResult:
    """The fate of one file in :func:`send_files`: ``status`` is the DIMSE status, None when never sent."""

    path: Path
    ok: bool
    status: int | None
    message: str


@dataclass
class SendReport:
    """What :func:`send_files` did, one :class:`FileResult` per file in the order given."""

    destination: str
    results: list[FileResult] = field(default_factory=list)

    @property
    def sent(self) -> list[FileResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line: how many files were stored at the destination and how many were not."""
        return f"{len(self.sent)} of {len(self.results)} file(s) stored at {self.destination}"


def _status_result(path: Path, status) -> FileResult:
    code = getattr(status, "Status", None) if status is not None else None
    if code is None:
        return FileResult(path, False, None, f"{path}: no response (association aborted or timed out)")
    code = int(code)
    if code == _STATUS_OK:
        return FileResult(path, True, code, f"{path}: stored")
    if code in _WARNING_STATUSES:
        return FileResult(path, True, code, f"{path}: stored with warning status 0x{code:04X}")
    return FileResult(path, False, code, f"{path}: refused with status 0x{code:04X}")


def send_files(
    files: list[Path],
    host: str,
    port: int,
    ae_title: str,
    *,
    calling_ae: str = "SPINEDX",
    timeout: float = 30.0,
) -> SendReport:
    """Send DICOM ``files`` to ``ae_title`` at ``host:port`` with C-STORE over one association.

    Presentation contexts are built from the files' SOP classes and transfer syntaxes (an
    uncompressed file may go in any uncompressed syntax). A file that is not DICOM, lacks its
    UIDs, has no accepted context or is refused is reported in the result and the rest go on.
    Raises :class:`InputError` (one line naming host:port and AE) when the association cannot be
    established, or the files need more than 128 presentation contexts.
    """
    where = f"{ae_title} at {host}:{port}"
    _check_ae_title(ae_title, where)
    report = SendReport(destination=where)
    datasets: list[tuple[Path, object]] = []
    wanted: dict[str, set[str]] = {}
    pending: dict[Path, FileResult] = {}
    for raw in files:
        path = Path(raw)
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError, KeyError):
            pending[path] = FileResult(path, False, None, f"{path}: not a readable DICOM file")
            datasets.append((path, None))
            continue
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
        syntax = getattr(meta, "TransferSyntaxUID", None)
        if not (_is_safe_uid(sop_class) and _is_safe_uid(ds.get("SOPInstanceUID")) and syntax):
            pending[path] = FileResult(
                path, False, None, f"{path}: no valid SOP Class/Instance UID or transfer syntax"
            )
            datasets.append((path, None))
            continue
        syntaxes = wanted.setdefault(str(sop_class), set())
        syntaxes.add(str(syntax))
        if UID(syntax) in _UNCOMPRESSED:
            syntaxes.update(str(s) for s in _UNCOMPRESSED)
        datasets.append((path, ds))

    if wanted:
        if len(wanted) > _MAX_CONTEXTS:
            raise InputError(
                f"{where}: the files hold {len(wanted)} SOP classes, more than the "
                f"{_MAX_CONTEXTS} presentation contexts one association allows"
            )
        ae = AE(ae_title=_check_ae_title(calling_ae, "calling AE"))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        for sop_class, syntaxes in sorted(wanted.items()):
            ae.add_requested_context(sop_class, sorted(syntaxes))
        assoc = ae.associate(host, port, ae_title=ae_title)
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
            raise InputError(f"cannot associate with {where}: {reason}")
        try:
            for path, ds in datasets:
                if ds is None:
                    continue
                if not assoc.is_established:
                    pending[path] = FileResult(path, False, None, f"{path}: not sent, association lost")
                    continue
                try:
                    status = assoc.send_c_store(ds)
                except (ValueError, RuntimeError) as exc:  # no accepted context for the file
                    kind = type(exc).__name__
                    pending[path] = FileResult(path, False, None, f"{path}: not sent ({kind})")
                    continue
                pending[path] = _status_result(path, status)
        finally:
            if assoc.is_established:
                assoc.release()
    for path, _ in datasets:
        report.results.append(pending[path])
    for result in report.failed:
        log.warning(result.message)
    return report


class PacsListener:
    """A C-STORE SCP with a stability timer per study; see :func:`listen`.

    ``start()``/``stop()`` or use it as a context manager. ``port`` is the bound port (useful when
    0 was asked for). ``completed`` counts studies reported complete; ``pending`` is the number of
    studies still inside their stability window.
    """

    def __init__(
        self,
        port: int,
        store_dir: Path,
        *,
        ae_title: str = "SPINEDX",
        stable_seconds: float = 10.0,
        on_study_complete: Callable[[Path], None] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if not 0 <= int(port) < 65536:
            raise InputError(f"listen port {port!r} must be a number from 0 to 65535")
        if stable_seconds < 0:
            raise InputError(f"stable_seconds {stable_seconds!r} must not be negative")
        self.host, self._port = host, int(port)
        self.store_dir = Path(store_dir)
        self.ae_title = _check_ae_title(ae_title, "listen")
        self.stable_seconds = float(stable_seconds)
        self.on_study_complete = on_study_complete
        self.completed = 0
        self._last_arrival: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._server = None
        self._monitor: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._last_arrival)

    def start(self) -> PacsListener:
        if self._server is not None:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._stopping = False
        self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spinedx-study")
        self._monitor = threading.Thread(target=self._watch, name="spinedx-stability", daemon=True)
        self._monitor.start()
        try:
            self._server = ae.start_server(
                (self.host, self._port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
            )
        except OSError as exc:
            self.stop()
            raise InputError(
                f"cannot listen on {self.host}:{self._port} as {self.ae_title}: {exc.strerror or exc}"
            ) from exc
        log.info("C-STORE SCP %s listening on %s:%d", self.ae_title, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop accepting associations, then wait for running callbacks.

        Studies still inside their stability window are not reported complete (their files stay
        in ``store_dir``).
        """
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None

    def __enter__(self) -> PacsListener:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- pynetdicom event handler (association threads): store and note the arrival, no more.
    def _handle_store(self, event) -> int:
        try:
            ds = event.dataset
            study, series = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
            instance = ds.get("SOPInstanceUID") or event.request.AffectedSOPInstanceUID
        except Exception as exc:  # noqa: BLE001 - a bad dataset must not kill the association
            log.warning("refused an instance: cannot decode it (%s)", type(exc).__name__)
            return 0xC210
        if not all(_is_safe_uid(uid) for uid in (study, series, instance)):
            log.warning("refused an instance: missing or invalid Study/Series/SOP Instance UID")
            return _STATUS_CANNOT_UNDERSTAND
        target = self.store_dir / str(study) / str(series) / f"{instance}.dcm"
        try:
            data = event.encoded_dataset()
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            log.warning("could not store an instance under %s: %s", self.store_dir, exc.strerror)
            return _STATUS_OUT_OF_RESOURCES
        with self._cond:
            self._last_arrival[str(study)] = time.monotonic()
            self._cond.notify_all()
        return _STATUS_OK

    # --- stability monitor (own thread): hands complete studies to the worker thread.
    def _watch(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                due = [s for s, t in self._last_arrival.items() if now - t >= self.stable_seconds]
                for study in due:
                    del self._last_arrival[study]
                    self.completed += 1
                    if self.on_study_complete is not None and self._workers is not None:
                        self._workers.submit(self._run_callback, self.store_dir / study)
                if self._last_arrival:
                    next_due = min(self._last_arrival.values()) + self.stable_seconds
                    self._cond.wait(timeout=max(next_due - time.monotonic(), 0.01))
                else:
                    self._cond.wait()

    def _run_callback(self, study_dir: Path) -> None:
        try:
            self.on_study_complete(study_dir)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - one failed study must not stop the listener
            log.error("on_study_complete failed for a study: %s: %s", type(exc).__name__, exc)


def listen(
    port: int,
    store_dir: Path,
    *,
    ae_title: str = "SPINEDX",
    stable_seconds: float = 10.0,
    on_study_complete: Callable[[Path], None] | None = None,
    host: str = "127.0.0.1",
) -> PacsListener:
    """A C-STORE SCP on ``host:port`` (not yet started): call ``start()`` or use ``with``.

    Each received instance is written atomically to
    ``store_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``; an instance whose
    UIDs are missing or not digits-and-dots is refused (status 0xC000), so no path can escape
    ``store_dir``. When a study has received nothing new for ``stable_seconds``,
    ``on_study_complete(study_dir)`` is called once, in a worker thread (one study at a time);
    an instance arriving later starts a new window and a new call. Port 0 picks a free port
    (read ``listener.port`` after ``start()``).
    """
    return PacsListener(
        port,
        store_dir,
        ae_title=ae_title,
        stable_seconds=stable_seconds,
        on_study_complete=on_study_complete,
        host=host,
    )
