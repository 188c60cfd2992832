"""``spinedx analyze --deid``: analyse de-identified copies of the DICOM inputs, never the originals.

Each DICOM input (a file, a series folder, or a study folder of DICOM series) is first copied
through the PS3.15 basic profile (:func:`spinedx.dicom.deid.deidentify_tree`) into
``OUT/deidentified-inputs/<input number>/<study>/<series>/``, named by the new UIDs because file
and folder names often carry patient names; the UID map (old -> new) is kept at the path the
user gives, for re-identification on site. The copies are what is analysed, so findings.json,
the report and the DICOM results (SR, SEG, SC) refer to them and hold no identifier. Inputs that
are not DICOM are analysed as given.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom.misc import is_dicom

from spinedx.dicom.deid import deidentify_tree
from spinedx.errors import InputError
from spinedx.pipelines.analyze import AnalyzedInput, analyze_inputs
from spinedx.pipelines.study import is_study, study_series

COPIES_FOLDER = "deidentified-inputs"


def deidentified_copy(path: Path, into: Path, uid_map: Path) -> list[Path]:
    """What to analyse in place of one DICOM input: its de-identified file, series folder(s), or
    study folder (a study folder stays a study, so that its series are still fused)."""
    if path.is_file():
        # deidentify_tree reads a folder: the one file goes alone into a scratch folder.
        with tempfile.TemporaryDirectory(prefix="spinedx-deid-") as scratch:
            shutil.copy2(path, Path(scratch) / "input.dcm")
            written = deidentify_tree(Path(scratch), into, uid_map)
        if not written:
            raise InputError(f"{path}: not a DICOM file")
        return written
    written = deidentify_tree(path, into, uid_map)
    if not written:
        raise InputError(f"{path}: no DICOM file to de-identify")
    series = sorted({file.parent for file in written})
    if not is_study(path):
        return series
    if len(series) < len(study_series(path)):
        raise InputError(
            f"{path}: --deid copies DICOM series only; give the study's other series without --deid"
        )
    return sorted({folder.parent for folder in series})


def analyze_deidentified(inputs: list[Path], out_dir: Path, uid_map: Path, task: str | None = None,
                         finish: Callable[[Path, Path], object] | None = None) -> Iterator[AnalyzedInput]:  # fmt: skip
    """Inputs that cannot be de-identified are reported first (with their error); then every
    de-identified copy and every non-DICOM input is analysed in one batch (models load once)."""
    to_analyse: list[Path] = []
    for number, path in enumerate(inputs, start=1):
        if not (path.is_dir() or (path.is_file() and is_dicom(path))):
            to_analyse.append(path)
            continue
        try:
            # One folder per input, so that two inputs of one study stay two inputs.
            to_analyse += deidentified_copy(path, out_dir / COPIES_FOLDER / str(number), uid_map)
        except InputError as exc:
            yield AnalyzedInput(path, error=f"--deid: {exc}")
    yield from analyze_inputs(to_analyse, out_dir, task, finish=finish)
