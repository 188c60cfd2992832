"""Output locations: checked before work, unique per input, complete or absent (io/output_location.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from spinedx.data.show import Skipped, render_annotations
from spinedx.errors import InputError
from spinedx.io.annotations import ANNOTATION_COLUMNS
from spinedx.io.output_location import (
    atomic_directory,
    check_output_location,
    output_stem,
    unique_output_names,
)

# --------------------------------------------------------------------------- check_output_location


def test_writable_locations_pass_and_nothing_is_created(tmp_path):
    check_output_location(tmp_path)
    check_output_location(tmp_path / "new" / "deeper")
    check_output_location(tmp_path / "report.csv", folder=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "folder", "fragment"),
    [
        (lambda t: (t / "out").write_text("x") and t / "out", True, "exists and is a file, not a folder"),
        (
            lambda t: (t / "f").write_text("x") and t / "f" / "out",
            True,
            "is a file, so nothing can be written below it",
        ),
        (
            lambda t: (t / "f").write_text("x") and t / "f" / "a" / "b.csv",
            False,
            "is a file, so nothing can be",
        ),
        (lambda t: (t / "d").mkdir() or t / "d", False, "is a folder; an output file name is expected"),
        (lambda t: Path("/proc/spinedx-out"), True, "inside /proc, a kernel file system"),
        (lambda t: Path("/sys/kernel/x"), True, "inside /sys, a kernel file system"),
    ],
)
def test_unusable_locations_are_one_line_naming_the_path(tmp_path, make, folder, fragment):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        check_output_location(path, folder=folder)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message


def test_read_only_file_system_is_named(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self.f_flag = result.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real(path)))
    with pytest.raises(InputError, match=f"^{tmp_path}/out: on a read-only file system"):
        check_output_location(tmp_path / "out")


def test_folder_without_write_permission_is_named(tmp_path, monkeypatch):
    # Tests may run as root, for whom chmod does not bite: emulate the kernel's answer.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(
        InputError, match=f"^{tmp_path}/out: no permission to write to the folder {tmp_path}$"
    ):
        check_output_location(tmp_path / "out")


# --------------------------------------------------------------------------- unique_output_names


def test_clashing_stems_are_numbered_in_input_order():
    inputs = [Path("a/x.png"), Path("b/x.png"), Path("c/x.nii.gz"), Path("d/y.dcm"), Path("series/z")]
    names = unique_output_names(inputs)
    assert list(names.values()) == ["x", "x-2", "x-3", "y", "z"]
    assert names.renamed == {Path("b/x.png"): "x-2", Path("c/x.nii.gz"): "x-3"}
    assert names.notes()[0] == "b/x.png: written as 'x-2' because another input is also named 'x'"
    assert unique_output_names(inputs) == names  # deterministic


def test_a_number_owned_by_another_input_is_skipped_and_case_counts_as_a_clash():
    names = unique_output_names([Path("a/x.png"), Path("b/x.png"), Path("c/x-2.png"), Path("d/X.png")])
    assert names == {
        Path("a/x.png"): "x",
        Path("b/x.png"): "x-3",
        Path("c/x-2.png"): "x-2",
        Path("d/X.png"): "X-4",
    }


def test_the_same_input_twice_has_one_name_and_stems_drop_image_suffixes():
    assert unique_output_names([Path("a/x.png"), Path("a/x.png")]) == {Path("a/x.png"): "x"}
    assert [output_stem(Path(p)) for p in ("s.nii.gz", "s.MHA", "s.tar.gz", ".png", "dir")] == [
        "s",
        "s",
        "s.tar.gz",
        ".png",
        "dir",
    ]


# --------------------------------------------------------------------------- atomic_directory


def test_atomic_directory_appears_complete(tmp_path):
    final = tmp_path / "out" / "case"
    with atomic_directory(final) as work:
        (work / "findings.json").write_text("{}")
        assert not final.exists()
    assert (final / "findings.json").read_text() == "{}"
    assert oct(final.stat().st_mode & 0o777) != oct(0o700)  # an ordinary folder, not mkdtemp's
    assert sorted(p.name for p in final.parent.iterdir()) == ["case"]


def test_atomic_directory_failure_keeps_the_old_folder(tmp_path):
    final = tmp_path / "case"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as work:
        (work / "masks.png").write_bytes(b"half")
        raise RuntimeError("model crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["case"] and (final / "old.txt").exists()
    with atomic_directory(final) as work:
        (work / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["case"]


def test_a_killed_run_leaves_no_folder_at_the_final_name(tmp_path):
    final = tmp_path / "case"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from spinedx.io.output_location import atomic_directory
        with atomic_directory(Path({str(final)!r})) as work:
            (work / "masks.png").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert not final.exists()


# --------------------------------------------------------------------------- data show output


def _table(image_ids: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(i, "R1", "Osteophytes", 1, 1, 20, 20) for i in image_ids], columns=ANNOTATION_COLUMNS[:7]
    )
    frame["study_id"], frame["series_id"] = frame["image_id"], ""
    return frame


def test_data_show_onto_a_file_fails_before_drawing(tmp_path):
    Image.new("L", (40, 40)).save(tmp_path / "a.png")
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(InputError, match="out: exists and is a file, not a folder"):
        render_annotations(_table(["a"]), tmp_path, tmp_path / "out")


def test_data_show_that_draws_nothing_is_an_error_with_a_sentence(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "a.png")
    Image.new("L", (40, 40)).save(tmp_path / "b.png")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image.Image, "save", refuse)
    with pytest.raises(InputError) as info:
        render_annotations(_table(["a", "b"]), tmp_path, tmp_path / "out")
    message = str(info.value)
    assert message.startswith(
        f"{tmp_path / 'out'}: wrote no image; 2 skipped, the first because a: cannot write "
    )
    assert "Permission denied" in message and "(" not in message.split("because")[1][:3]


def test_skipped_items_print_as_sentences():
    item = Skipped("a", "images/a.png: cannot decode image (truncated)")
    assert f"warning: skipped {item}" == "warning: skipped a: images/a.png: cannot decode image (truncated)"
    assert item == ("a", "images/a.png: cannot decode image (truncated)")
