"""The review service: FastAPI routes over the store and the analysis pool (see docs/how-to/review-app.md).

Every ``/api/`` route needs ``Authorization: Bearer <token>``; the viewer page and its assets do
not (the page asks for the token and sends it as that header, so no cookie makes requests
forgeable). Errors the client can fix answer 4xx with one line in ``detail``; anything else is
logged (by study id, never with request content) and answered with a generic 500 body.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.types import ASGIApp, Receive, Scope, Send

from spinedx.errors import InputError
from spinedx.io.paths import inside
from spinedx.serve import viewer
from spinedx.serve.analysis import DONE, QUEUED, AnalysisPool, study_dir
from spinedx.serve.reviews import (
    ReviewRejected,
    agreement,
    record_decisions,
    review_json,
    review_progress,
    study_state,
)
from spinedx.serve.settings import ServeSettings
from spinedx.serve.uploads import UploadRejected, store_upload
from spinedx.store import Store, Study, open_store
from spinedx.tasks import analysis_tasks

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 1 << 20
UPLOAD_BLOCK = 1 << 20
NAME_LENGTH = 120
BEARER = HTTPBearer(auto_error=False)


class Decision(BaseModel):
    finding: str = Field(max_length=60, examples=["L4/L5:pfirrmann"])
    action: Literal["accept", "reject", "correct"]
    value: bool | int | None = None
    comment: str | None = Field(None, max_length=2000)


class ReviewRequest(BaseModel):
    reviewer: str = Field(min_length=1, max_length=100)
    decisions: list[Decision] = Field(min_length=1, max_length=1000)


class BodyLimit:
    """Answer 413 to a request body beyond ``max_bytes``, declared or counted as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI passes an HTTPException from body parsing through as the response.
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"upload too large: the limit is {self.max_bytes - MULTIPART_OVERHEAD_BYTES} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)


def create_app(settings: ServeSettings) -> FastAPI:
    """The review service for ``settings``; the store opens and the workers start with the app."""
    if not settings.token:
        raise InputError("a token is required (SPINEDX_TOKEN)")
    data_dir = settings.data_dir.resolve()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        store = open_store(settings.db_url, data_dir)
        pool = AnalysisPool(store, data_dir, workers=settings.workers, max_queued=settings.max_queued)
        pool.start()
        state.update(store=store, pool=pool)
        try:
            yield
        finally:
            await run_in_threadpool(pool.stop)
            store.close()

    app = FastAPI(
        title="spinedx review service",
        summary="Upload studies, read the findings, review them; research use, not a medical device",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_upload_bytes + MULTIPART_OVERHEAD_BYTES)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials if credentials else ""
        if not secrets.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def store() -> Store:
        return state["store"]

    def pool() -> AnalysisPool:
        return state["pool"]

    def load(session, study_id: str) -> Study:
        study = session.get(Study, study_id)
        if study is None:
            raise HTTPException(404, f"no study {study_id}")
        return study

    def done_folder(study_id: str, part: str) -> Path:
        with store().session() as session:
            study = load(session, study_id)
            if study.status != DONE:
                raise HTTPException(404, f"study {study_id} is {study.status}; results come when it is done")
        return study_dir(data_dir, study_id) / part

    def status_json(study: Study) -> dict[str, Any]:
        total, decided = review_progress(study)
        return {
            "id": study.id,
            "name": study.name,
            "task": study.task,
            "status": study.status,
            "progress": study.progress,
            "error": study.error,
            "created": study.created.isoformat(),
            "findings_total": total,
            "findings_decided": decided,
            "reviewed": study.status == DONE and total > 0 and decided == total,
        }

    @api.post("/studies", status_code=202, summary="Upload a study for analysis")
    async def upload_study(
        file: Annotated[
            UploadFile, File(description="PNG/JPEG, a DICOM file, a zip of DICOM files, NIfTI, .mha")
        ],
        task: Annotated[
            str | None, Form(description="analysis task; a plain image defaults to mri-discs")
        ] = None,
    ) -> dict[str, str]:
        names = [known.name for known in analysis_tasks()]
        if task and task not in names:
            raise HTTPException(400, f"unknown task {task!r} (available: {', '.join(names)})")
        if not pool().reserve():
            raise HTTPException(503, "the analysis queue is full; retry in a minute")
        study_id = uuid.uuid4().hex
        folder = study_dir(data_dir, study_id)
        try:
            received = await _receive(file, data_dir, settings.limits.max_upload_bytes)
            folder.mkdir(parents=True)
            try:
                kind, input_path = await run_in_threadpool(
                    store_upload, received, folder, keep_phi=settings.keep_phi, limits=settings.limits
                )
            finally:
                received.unlink(missing_ok=True)
            name = _display_name(file.filename, kind, study_id, settings.keep_phi)
            with store().session() as session:
                session.add(
                    Study(
                        id=study_id,
                        name=name,
                        task=task or "",
                        kind=kind,
                        status=QUEUED,
                        input_path=str(input_path.relative_to(data_dir)),
                    )
                )
        except UploadRejected as exc:
            pool().release()
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(exc.status, exc.message) from None
        except BaseException:
            pool().release()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        pool().submit(study_id)
        log.info("study %s: queued (%s)", study_id, kind)
        return {"id": study_id}

    @api.get("/studies", summary="Every study with its status and review progress")
    def list_studies() -> list[dict[str, Any]]:
        with store().session() as session:
            studies = session.scalars(
                select(Study).options(selectinload(Study.reviews)).order_by(Study.created)
            )
            return [status_json(study) for study in studies]

    @api.get("/studies/{study_id}", summary="Status of one study")
    def get_study(study_id: str) -> dict[str, Any]:
        with store().session() as session:
            return status_json(load(session, study_id))

    @api.get("/studies/{study_id}/findings", summary="findings.json of the analysed slice (404 until done)")
    def get_findings(study_id: str) -> dict[str, Any]:
        with store().session() as session:
            study = load(session, study_id)
            if study.status != DONE:
                raise HTTPException(404, f"study {study_id} is {study.status}; findings come when it is done")
            return study.findings

    @api.get("/studies/{study_id}/slices", summary="The input's sagittal stack: count, analysed index, size")
    def get_slices(study_id: str) -> FileResponse:
        return FileResponse(done_folder(study_id, "slices") / "slices.json", media_type="application/json")

    @api.get("/studies/{study_id}/slices/{index}", summary="One slice as a grayscale PNG")
    def get_slice(study_id: str, index: int) -> FileResponse:
        path = done_folder(study_id, "slices") / f"{index}.png"
        if index < 0 or not path.is_file():
            raise HTTPException(404, f"study {study_id} has no slice {index}")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/studies/{study_id}/files/{relative:path}", summary="A file of the result folder")
    def get_file(study_id: str, relative: str) -> FileResponse:
        with store().session() as session:
            study = load(session, study_id)
            result = data_dir / study.result_path if study.status == DONE and study.result_path else None
        if result is None:
            raise HTTPException(404, f"study {study_id} has no results yet")
        try:
            path = inside(result, relative, "file", what="path")
        except InputError:
            raise HTTPException(404, "no such file") from None
        if PurePosixPath(relative).name.startswith(".") or not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    @api.get("/studies/{study_id}/report", summary="report.html of the study")
    def get_report(study_id: str) -> FileResponse:
        return get_file(study_id, "report.html")

    @api.post("/studies/{study_id}/reviews", status_code=201, summary="Store review decisions")
    def post_reviews(study_id: str, request: ReviewRequest) -> dict[str, Any]:
        with store().session() as session:
            study = load(session, study_id)
            if study.status != DONE:
                raise HTTPException(409, f"study {study_id} is {study.status}; review it once it is done")
            try:
                saved = record_decisions(
                    session,
                    study,
                    request.reviewer,
                    [decision.model_dump() for decision in request.decisions],
                )
            except ReviewRejected as exc:
                raise HTTPException(400, str(exc)) from None
            return {"saved": saved, "study": status_json(study)}

    @api.get("/studies/{study_id}/reviews", summary="Review history, oldest first")
    def get_reviews(study_id: str) -> list[dict[str, Any]]:
        with store().session() as session:
            return [review_json(review) for review in load(session, study_id).reviews]

    @api.get("/studies/{study_id}/state", summary="Current value of each finding after the latest decision")
    def get_state(study_id: str) -> dict[str, Any]:
        with store().session() as session:
            return {"findings": [s.as_json() for s in study_state(load(session, study_id)).values()]}

    @api.get("/agreement", summary="Cohen's kappa per finding kind between reviewer pairs")
    def get_agreement() -> list[dict[str, Any]]:
        with store().session() as session:
            return agreement(session)

    app.include_router(api)
    app.include_router(viewer.router)
    return app


async def _receive(upload: UploadFile, data_dir: Path, max_bytes: int) -> Path:
    """Copy the upload into the data folder's own temporary area, refusing more than ``max_bytes``."""
    incoming = data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=incoming)
    path = Path(name)
    written = 0
    try:
        with open(descriptor, "wb") as handle:
            while block := await upload.read(UPLOAD_BLOCK):
                written += len(block)
                if written > max_bytes:
                    raise UploadRejected(413, f"upload too large: the limit is {max_bytes} bytes")
                await asyncio.to_thread(handle.write, block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if written == 0:
        path.unlink(missing_ok=True)
        raise UploadRejected(400, "the uploaded file is empty")
    return path


def _display_name(filename: str | None, kind: str, study_id: str, keep_phi: bool) -> str:
    """The study's name in lists: the client's file name, except for DICOM (file names often carry patient names)."""
    if kind in ("dicom", "zip") and not keep_phi:
        return f"DICOM study {study_id[:8]}"
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name[:NAME_LENGTH] or f"study {study_id[:8]}"
