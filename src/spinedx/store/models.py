"""Tables of the store: studies under review, review decisions, and the PACS bridge's jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way out, on SQLite (which drops the zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Study(Base):
    """One uploaded study: where its files are, how far its analysis got, and its findings."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20))  # what the upload was: png, jpeg, dicom, zip, nifti, mha
    status: Mapped[str] = mapped_column(String(10), index=True)  # queued | running | done | failed
    progress: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    updated: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    # Paths relative to the data folder, so the folder can move.
    input_path: Mapped[str] = mapped_column(String(300))
    result_path: Mapped[str | None] = mapped_column(String(300))
    # The findings as the model made them (the snapshot reviews refer to) and who made them.
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(100))
    reviews: Mapped[list[Review]] = relationship(back_populates="study", order_by="Review.id")


class Review(Base):
    """One decision of one reviewer on one finding; the history is never rewritten."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    finding: Mapped[str] = mapped_column(String(60))  # "<level>:<finding>", e.g. "L4/L5:pfirrmann"
    reviewer: Mapped[str] = mapped_column(String(100), index=True)
    time: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    action: Mapped[str] = mapped_column(String(10))  # accept | reject | correct
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(10))  # where ``after`` comes from: model | person
    model_version: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(Text)
    study: Mapped[Study] = relationship(back_populates="reviews")


class PacsStudy(Base):
    """What the PACS bridge did with one Orthanc study, so a restart neither repeats nor loses work."""

    __tablename__ = "pacs_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    orthanc_id: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(10), index=True)  # pending | running | done | failed
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created: Mapped[datetime] = mapped_column(default=utc_now)
    updated: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    outputs: Mapped[list[Any] | None] = mapped_column(JSON)  # ids of the instances sent back
