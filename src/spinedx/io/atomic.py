"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every helper writes to a temporary file in the destination folder (same filesystem, so the
final ``os.replace`` is atomic), flushes it to disk, then renames it over the target. On any
failure the temporary file is removed and the target is left untouched.

Use :func:`atomic_path` when a library wants a path to write to (``torch.save``,
``DataFrame.to_csv``, ``Image.save``): the temporary path keeps the target's suffix, so tools
that pick a format from the suffix still work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = current_umask()


def _final_mode(path: Path) -> int:
    """Keep an existing target's permissions; otherwise the usual ``0o666 & ~umask``."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The parent folder is created if needed. If the ``with`` body raises, the temporary file
    is removed, ``path`` is left as it was and the exception propagates.

    >>> with atomic_path(out / "table.csv") as tmp:   # doctest: +SKIP
    ...     frame.to_csv(tmp, index=False)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a ``Path``."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, ``\\n`` line endings kept as given)."""
    return atomic_write_bytes(path, text.encode(encoding))
