"""Reads stay inside their roots: a name taken from an input file resolves under its folder only.

Annotation tables name images (``image_id``), MetaImage headers name their data file
(``ElementDataFile``), dataset folders name their files. Such a name is data, not a path the user
chose, so it must not reach outside the folder it is resolved in: an absolute name, ``..`` steps
that climb out, or a symlink pointing elsewhere raise :class:`~spinedx.errors.InputError` naming
``where`` (the file and row, or header field, that gave the name).
"""

from __future__ import annotations

import os
from pathlib import Path

from spinedx.errors import InputError


def inside(root: Path, name: str, where: str, what: str = "name") -> Path:
    """``root / name``, refused (InputError naming ``where``) unless it resolves inside ``root``.

    ``name`` may contain subfolders; the file need not exist. Symlinks are followed, so a link
    inside ``root`` that points outside is refused too.
    """
    root = Path(root)
    if "\x00" in name:
        raise InputError(f"{where}: {what} {name!r} contains a NUL character")
    if os.path.isabs(name):
        raise InputError(f"{where}: {what} '{name}' is an absolute path; it must name a file inside {root}")
    candidate = root / name
    try:
        resolved = candidate.resolve()
        base = root.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InputError(f"{where}: {what} '{name}' cannot be resolved under {root} ({exc})") from None
    if not resolved.is_relative_to(base):
        via = " through a symlink" if ".." not in Path(name).parts else ""
        raise InputError(f"{where}: {what} '{name}' points outside {root}{via}; refusing to read it")
    return candidate


def existing_file(candidate: Path) -> bool:
    """``candidate.is_file()``, False instead of an OSError for names the file system refuses."""
    try:
        return candidate.is_file()
    except OSError:  # e.g. ENAMETOOLONG: such a file cannot exist
        return False
