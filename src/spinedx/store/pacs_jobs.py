"""The PACS bridge's record of each Orthanc study: claim it, then mark it done or failed.

A study is analysed at most once: :func:`claim` lets exactly one caller through (an atomic
conditional UPDATE, or the INSERT that wins the unique key), and done or failed studies are
never claimed again. After a crash, :func:`requeue_interrupted` turns the studies left running
back into pending ones, so they are claimed again rather than lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from spinedx.store.database import Store
from spinedx.store.models import PacsStudy, utc_now

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass(frozen=True)
class PacsJob:
    orthanc_id: str
    status: str
    reason: str | None
    attempts: int
    created: datetime
    updated: datetime
    outputs: list[Any] | None


def _job(row: PacsStudy) -> PacsJob:
    return PacsJob(
        row.orthanc_id, row.status, row.reason, row.attempts, row.created, row.updated, row.outputs
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def claim(store: Store, orthanc_id: str) -> bool:
    """True if the caller may analyse the study now (it is new or pending); it is then running."""
    with store.session() as session:
        taken = session.execute(
            update(PacsStudy)
            .where(PacsStudy.orthanc_id == orthanc_id, PacsStudy.status == PENDING)
            .values(status=RUNNING, attempts=PacsStudy.attempts + 1, updated=utc_now())
        )
        if taken.rowcount == 1:
            return True
        if session.scalar(select(PacsStudy.id).where(PacsStudy.orthanc_id == orthanc_id)) is not None:
            return False
    try:
        with store.session() as session:
            session.add(PacsStudy(orthanc_id=orthanc_id, status=RUNNING, attempts=1))
    except IntegrityError:  # another caller inserted it first and holds it
        return False
    return True


def _finish(store: Store, orthanc_id: str, **values: Any) -> None:
    with store.session() as session:
        changed = session.execute(
            update(PacsStudy).where(PacsStudy.orthanc_id == orthanc_id).values(updated=utc_now(), **values)
        )
        if changed.rowcount == 0:
            raise KeyError(f"no PACS study {orthanc_id!r} was claimed")


def mark_done(store: Store, orthanc_id: str, outputs: list[Any]) -> None:
    """Record that the study was analysed and which instances were sent back."""
    _finish(store, orthanc_id, status=DONE, reason=None, outputs=list(outputs))


def mark_failed(store: Store, orthanc_id: str, reason: str) -> None:
    """Record that the study failed, with a one-line reason; it is not tried again."""
    _finish(store, orthanc_id, status=FAILED, reason=_one_line(reason))


def requeue_interrupted(store: Store) -> int:
    """Running studies (left by a process that died) become pending again; returns how many."""
    with store.session() as session:
        result = session.execute(
            update(PacsStudy).where(PacsStudy.status == RUNNING).values(status=PENDING, updated=utc_now())
        )
        return result.rowcount


def status_of(store: Store, orthanc_id: str) -> PacsJob | None:
    """The record of one study, or None if it was never claimed."""
    with store.session() as session:
        row = session.scalar(select(PacsStudy).where(PacsStudy.orthanc_id == orthanc_id))
        return None if row is None else _job(row)


def list_jobs(store: Store) -> list[PacsJob]:
    """Every recorded study, oldest first."""
    with store.session() as session:
        return [_job(row) for row in session.scalars(select(PacsStudy).order_by(PacsStudy.id))]
