"""Where outputs go: checked before any work, unique per input, complete or absent.

* :func:`check_output_location` refuses, with one line naming the path, an output location that
  cannot be written (an existing file where a folder is wanted or the reverse, a file among its
  parents, a folder without write permission, a read-only file system, ``/proc`` or ``/sys``).
  Commands call it on every ``--out`` before they read or compute anything.
* :func:`unique_output_names` gives each input its own output name: inputs whose stems clash
  (``a/x.png`` and ``b/x.png``) get ``x``, ``x-2``, ... in input order, and the result says which
  were renamed so the command can tell the user.
* :func:`atomic_directory` writes a folder under a temporary sibling name and renames it into
  place when the body finishes, so a killed run leaves no half-written folder at the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from spinedx.errors import InputError
from spinedx.io.atomic import current_umask

VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))
"""Kernel file systems: writing there is never an output, and may change the system."""
INPUT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".dcm", ".dicom", ".png", ".jpg", ".jpeg")
"""Suffixes dropped from an input's name to make its output name (longest first)."""


def check_output_location(path: Path, *, folder: bool = True) -> None:
    """Raise InputError (one line naming ``path``) unless outputs can be written at ``path``.

    ``folder`` True: ``path`` is (or will be created as) a folder; False: a file. Nothing is
    created. Missing parent folders are fine as long as the nearest existing one is writable.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for root in VIRTUAL_ROOTS:
        if absolute == root or absolute.is_relative_to(root) or _resolved(absolute).is_relative_to(root):
            raise InputError(f"{path}: inside {root}, a kernel file system; choose another output location")
    if path.exists():
        if folder and not path.is_dir():
            raise InputError(f"{path}: exists and is a file, not a folder; choose another output folder")
        if not folder and path.is_dir():
            raise InputError(f"{path}: is a folder; an output file name is expected")
    existing = _nearest_existing(absolute)
    if not existing.is_dir():
        raise InputError(f"{path}: {existing} is a file, so nothing can be written below it")
    target = path if path.exists() else existing
    _check_writable(path, target)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``/`` always does)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _check_writable(path: Path, target: Path) -> None:
    """``target`` (``path`` itself, or the folder it will be created in) must accept writes."""
    try:
        read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise InputError(f"{path}: on a read-only file system ({target}); choose another output location")
    access = os.W_OK | (os.X_OK if target.is_dir() else 0)
    if not os.access(target, access):
        what = "folder" if target.is_dir() else "file"
        raise InputError(f"{path}: no permission to write to the {what} {target}")


def output_stem(path: Path) -> str:
    """An input's name without its image suffix: ``scan.nii.gz`` -> ``scan``; a folder keeps its name."""
    name = Path(path).name
    for suffix in INPUT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


class OutputNames(dict[Path, str]):
    """Input path -> output name; :attr:`renamed` and :meth:`notes` tell which inputs were renamed."""

    @property
    def renamed(self) -> dict[Path, str]:
        """The inputs whose output name is not their own stem."""
        return {path: name for path, name in self.items() if name != output_stem(path)}

    def notes(self) -> list[str]:
        """One sentence per renamed input, for the command to print."""
        return [
            f"{path}: written as '{name}' because another input is also named '{output_stem(path)}'"
            for path, name in self.renamed.items()
        ]


def unique_output_names(inputs: Sequence[Path]) -> OutputNames:
    """A distinct output name per input (see :func:`output_stem`), deterministic in input order.

    The first input with a stem keeps it; later ones get ``<stem>-2``, ``<stem>-3``, ... skipping
    names that any input owns. Names are compared without regard to case, as case-insensitive file
    systems do. The same path given twice maps to one name.
    """
    paths = list(dict.fromkeys(Path(p) for p in inputs))
    owned = {output_stem(p).casefold() for p in paths}
    taken: set[str] = set()
    names = OutputNames()
    for path in paths:
        stem = output_stem(path)
        name, counter = stem, 1
        while name.casefold() in taken or (name != stem and name.casefold() in owned):
            counter += 1
            name = f"{stem}-{counter}"
        taken.add(name.casefold())
        names[path] = name
    return names


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``final``; when the body finishes it becomes ``final``.

    An existing ``final`` is replaced only after the new folder is complete. If the body raises
    (or is interrupted) the temporary folder is removed and ``final`` is left as it was. A run
    killed outright leaves only a hidden ``.<name>.tmp-*`` sibling, never a half ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the output is an ordinary folder
        _replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_directory(source: Path, final: Path) -> None:
    """Rename ``source`` to ``final``; an old ``final`` is moved aside first and removed after."""
    if not final.exists():
        os.rename(source, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rename(final, old / final.name)
    try:
        os.rename(source, final)
    except BaseException:
        os.rename(old / final.name, final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
