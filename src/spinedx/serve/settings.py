"""What ``spinedx serve`` is configured with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spinedx.serve.uploads import UploadLimits

TOKEN_ENV = "SPINEDX_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    data_dir: Path
    token: str
    """Every /api/ request must carry ``Authorization: Bearer <token>``."""
    db_url: str | None = None
    """SQLAlchemy URL; None: SQLite in ``data_dir``."""
    keep_phi: bool = False
    """Store DICOM uploads as sent; by default they are de-identified (PS3.15 basic profile) first."""
    workers: int = 1
    max_queued: int = 64
    limits: UploadLimits = field(default_factory=UploadLimits)
