"""A corpus of bad and adversarial inputs through the CLI (issue 12): every case exits 2 with one
line naming the file/row and the problem, never a traceback, and a batch goes on past a bad item.

Inputs are generated in each test (no committed binaries). Cases run the real entry point
(``spinedx.cli.main``) in-process for speed; two run it as a subprocess under an address-space
limit to show memory stays bounded. No case loads a model: analyze fails before it needs one.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinedx.cli import main
from test_hostile_readers import huge_png, metaimage, phantom, truncate, write_volume
from test_io_images import make_dicom, save

HEADER = "image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture
def spinedx(monkeypatch, capsys):
    """Run the CLI entry point with ``args``; any exception but SystemExit fails the test (a traceback)."""

    def run(*args) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["spinedx", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        out, err = capsys.readouterr()
        return Outcome(int(info.value.code or 0), out, err)

    return run


def assert_error(outcome: Outcome, first_line: str) -> None:
    """Exit 2, no traceback, and the first ``error:`` line starts with ``first_line``."""
    assert outcome.code == 2, outcome
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.errors, outcome.stderr
    assert outcome.errors[0].startswith(f"error: {first_line}"), outcome.errors[0]


@pytest.fixture
def images(tmp_path) -> Path:
    """An image folder with one good 64x64 PNG, ``good``."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        folder / "good.png"
    )
    return folder


def csv_file(tmp_path: Path, text: str | bytes, name: str = "ann.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


GOOD_ROW = "good,R1,Osteophytes,5,5,30,30"

# --------------------------------------------------------------------------- CSV: the whole file is refused

CSV_CASES = {
    "empty file": (b"", "{csv}: no rows (the file is empty)"),
    "header only": (HEADER + "\n", "{csv}: no rows"),
    "missing column": ("image_id,rad_id,lesion_type,xmin,ymin,xmax\ngood,R1,Osteophytes,1,2,3\n", "{csv}: missing column 'ymax'"),
    "repeated column": (HEADER + ",xmin\n" + GOOD_ROW + ",4\n", "{csv}: column 'xmin' appears more than once"),
    "text coordinate": (HEADER + "\ngood,R1,Osteophytes,abc,5,30,30\n", "{csv} row 2 column 'xmin': 'abc' is not a number"),
    "infinite coordinate": (HEADER + "\ngood,R1,Osteophytes,5,5,inf,30\n", "{csv} row 2 column 'xmax': 'inf' is not a finite"),
    "overflowing coordinate": (HEADER + "\ngood,R1,Osteophytes,5,5,30,1e999\n", "{csv} row 2 column 'ymax': '1e999' is not a finite"),
    "partial box": (HEADER + "\ngood,R1,Osteophytes,5,,30,30\n", "{csv} row 2: incomplete box (column 'ymin' empty)"),
    "lesion without box": (HEADER + "\ngood,R1,Osteophytes,,,,\n", "{csv} row 2: lesion 'Osteophytes' has no box"),
    "not UTF-8": (HEADER.encode() + b"\ng\xffood,R1,Osteophytes,5,5,30,30\n", "{csv}: cannot parse CSV: not UTF-8 text"),
    "extra fields": (HEADER + "\n" + GOOD_ROW + ",extra\n", "{csv}: cannot parse CSV: data rows have more fields"),
    "binary garbage": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "{csv}: "),
    "line break in image_id": (HEADER + '\n"go\nod",R1,Osteophytes,5,5,30,30\n', "{csv} row 2 column 'image_id': 'go\\nod' contains control"),
    "empty image_id": (HEADER + "\n,R1,Osteophytes,5,5,30,30\n", "{csv} row 2 column 'image_id': empty"),
    "megabyte cell": (HEADER + "\ngood,R1,Osteophytes," + "9x" * 500_000 + ",5,30,30\n", "{csv} row 2 column 'xmin': '9x9x9x"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_bad_csv_is_one_line(tmp_path, images, spinedx, case):
    text, first = CSV_CASES[case]
    csv = csv_file(tmp_path, text)
    outcome = spinedx("data", "check", csv, "--images", images, "--json")
    assert_error(outcome, first.format(csv=csv))
    assert len(outcome.errors[0]) < 300


def test_csv_that_is_a_folder_or_missing(tmp_path, images, spinedx):
    assert_error(spinedx("data", "check", tmp_path, "--images", images), f"{tmp_path}: not a file")
    assert_error(
        spinedx("data", "check", tmp_path / "no.csv", "--images", images),
        f"{tmp_path / 'no.csv'}: file not found",
    )


def test_missing_image_folder(tmp_path, spinedx):
    csv = csv_file(tmp_path, HEADER + "\n" + GOOD_ROW + "\n")
    assert_error(
        spinedx("data", "check", csv, "--images", tmp_path / "nope"),
        f"{tmp_path / 'nope'}: image folder not found",
    )


# --------------------------------------------------------------------------- data check: one bad item, the rest checked


def _dicom_without_pixels(path: Path) -> None:
    ds = make_dicom(np.zeros((8, 8), np.uint16))
    del ds.PixelData
    save(ds, path)


def _huge_dicom_header(path: Path) -> None:
    ds = make_dicom(np.zeros((8, 8), np.uint16))
    ds.Rows, ds.Columns = 50000, 50000
    save(ds, path)


def _symlink_out(folder: Path, name: str) -> None:
    outside = folder.parent / "outside.png"
    Image.new("L", (64, 64)).save(outside)
    (folder / name).symlink_to(outside)


IMAGE_CASES = {
    "huge PNG": ("bomb", lambda f: huge_png(f / "bomb.png", 12000, 12000), "image is 12000x12000 pixels"),
    "truncated PNG": ("cut", lambda f: truncate(_png(f / "cut.png"), 0.3), "cannot decode image"),
    "empty PNG": ("zero", lambda f: (f / "zero.png").write_bytes(b""), "cannot decode image"),
    "text as PNG": ("text", lambda f: (f / "text.png").write_text("hello"), "cannot decode image"),
    "corrupt DICOM": ("bad", lambda f: (f / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM\x02\x00junk"), "bad.dcm"),
    "DICOM without pixels": ("nopix", lambda f: _dicom_without_pixels(f / "nopix.dcm"), "DICOM file has no pixel data"),
    "DICOM header 50000 px": ("wide", lambda f: _huge_dicom_header(f / "wide.dcm"), "image is 50000x50000 pixels"),
    "escaping id": ("../outside", lambda f: _png(f.parent / "outside.png"), "image_id '../outside.png' points outside"),
    "absolute id": ("/etc/hostname", lambda f: None, "image_id '/etc/hostname.png' is an absolute path"),
    "symlink out": ("link", lambda f: _symlink_out(f, "link.png"), "image_id 'link.png' points outside"),
    "missing image": ("ghost", lambda f: None, "ghost"),
}  # fmt: skip


def _png(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_one_bad_image_is_reported_and_the_rest_checked(tmp_path, images, spinedx, case):
    image_id, build, fragment = IMAGE_CASES[case]
    build(images)
    csv = csv_file(tmp_path, f"{HEADER}\n{GOOD_ROW}\n{image_id},R1,Osteophytes,5,5,30,30\n")
    outcome = spinedx("data", "check", csv, "--images", images)
    assert outcome.code == 2 and "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.stdout.splitlines()[0] == "Dataset check: 1 problem(s) found"
    assert (
        "images listed: 2, found: " in outcome.stdout and "readable: 1" in outcome.stdout
    )  # good.png was read
    assert fragment in outcome.stdout, outcome.stdout


BOX_CASES = {
    "xmin > xmax": ("30,5,5,30", "degenerate boxes: 1", "xmax 5 <= xmin 30"),
    "zero size": ("5,5,5,5", "degenerate boxes: 1", "xmax 5 <= xmin 5; ymax 5 <= ymin 5"),
    "entirely outside": ("100,100,200,200", "boxes outside the image: 1", "the box lies entirely outside the image"),
    "plus minus 1e9": ("-1e9,-1e9,1e9,1e9", "boxes outside the image: 1", "negative xmin -1e+09"),
    "30000 px box": ("0,0,30000,30000", "boxes outside the image: 1", "xmax 30000 > image width 64"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BOX_CASES))
def test_bad_boxes_are_named_by_row(tmp_path, images, spinedx, case):
    box, section, reason = BOX_CASES[case]
    csv = csv_file(tmp_path, f"{HEADER}\n{GOOD_ROW}\ngood,R2,Osteophytes,{box}\n")
    outcome = spinedx("data", "check", csv, "--images", images)
    assert outcome.code == 2 and "Traceback" not in outcome.stdout + outcome.stderr
    line = next(line for line in outcome.stdout.splitlines() if "row 3 (good): " in line)
    assert section in outcome.stdout and reason in line, outcome.stdout


# --------------------------------------------------------------------------- data show: output locations


@pytest.mark.parametrize(
    ("make_out", "fragment"),
    [
        (lambda t: (t / "out").write_text("x") and t / "out", "exists and is a file, not a folder"),
        (
            lambda t: (t / "f").write_text("x") and t / "f" / "out",
            "is a file, so nothing can be written below it",
        ),
        (lambda t: Path("/proc/spinedx"), "inside /proc, a kernel file system"),
    ],
    ids=["out is a file", "out under a file", "out in /proc"],
)
def test_data_show_refuses_unwritable_output(tmp_path, images, spinedx, make_out, fragment):
    out = make_out(tmp_path)
    csv = csv_file(tmp_path, f"{HEADER}\n{GOOD_ROW}\n")
    outcome = spinedx("data", "show", csv, "--images", images, "--out", out)
    assert_error(outcome, f"{out}: ")
    assert fragment in outcome.errors[0]


def test_data_show_that_draws_nothing_fails(tmp_path, images, spinedx):
    (images / "bad.png").write_bytes(b"junk")
    csv = csv_file(tmp_path, f"{HEADER}\nbad,R1,Osteophytes,5,5,30,30\n../x,R1,Osteophytes,5,5,30,30\n")
    outcome = spinedx("data", "show", csv, "--images", images, "--out", tmp_path / "out")
    assert_error(outcome, f"{tmp_path / 'out'}: wrote no image; 2 skipped, the first because bad: ")


def test_data_show_goes_on_and_warns_in_sentences(tmp_path, images, spinedx):
    (images / "bad.png").write_bytes(b"junk")
    csv = csv_file(
        tmp_path, f"{HEADER}\nbad,R1,Osteophytes,5,5,30,30\n{GOOD_ROW}\n../x,R1,Osteophytes,5,5,30,30\n"
    )
    outcome = spinedx("data", "show", csv, "--images", images, "--out", tmp_path / "out")
    assert outcome.code == 0 and (tmp_path / "out" / "good.png").is_file()
    warnings = [line for line in outcome.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 2 and not any("('" in line for line in warnings)  # sentences, not tuples
    assert warnings[1].startswith(f"warning: skipped ../x: {csv} row 4: image_id '../x.png' points outside")


# --------------------------------------------------------------------------- analyze: volumes and images refused before any model


def _nifti_truncated(t: Path) -> Path:
    return truncate(write_volume(t / "cut.nii.gz", phantom()))


def _nifti_corrupt(t: Path) -> Path:
    path = write_volume(t / "bad.nii.gz", phantom())
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def _meta_outside(t: Path) -> Path:
    (t / "elsewhere").mkdir()
    phantom().tofile(t / "elsewhere" / "p.raw")
    return metaimage(t / "case", "../elsewhere/p.raw")


def _meta_short(t: Path) -> Path:
    header = metaimage(t, "p.raw")
    phantom()[:3].tofile(t / "p.raw")
    return header


def _dicomdir(t: Path) -> Path:
    from pydicom.fileset import FileSet

    ds = make_dicom(np.zeros((8, 8), np.uint16))
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "X", "1.2.3", "1.2.3.4"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20200101", "1200", "1", 1, 1
    files = FileSet()
    files.add(ds)
    files.write(t / "disc")
    return t / "disc" / "DICOMDIR"


ANALYZE_CASES = {
    "truncated nii.gz": (_nifti_truncated, "compressed file is truncated"),
    "corrupt nii.gz": (_nifti_corrupt, "compressed file is"),
    "MetaImage data outside": (_meta_outside, "ElementDataFile: data file '../elsewhere/p.raw' points outside"),
    "MetaImage data missing": (lambda t: metaimage(t, "p.raw"), "ElementDataFile: the data file"),
    "MetaImage data short": (_meta_short, "data file of"),
    "huge PNG": (lambda t: huge_png(t / "bomb.png", 12000, 12000), "image is 12000x12000 pixels"),
    "DICOMDIR": (_dicomdir, "a DICOMDIR (the index of a DICOM disc or folder), not an image"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ANALYZE_CASES))
def test_analyze_refuses_bad_volumes_in_one_line(tmp_path, spinedx, case):
    build, fragment = ANALYZE_CASES[case]
    path = build(tmp_path)
    outcome = spinedx("analyze", path, "--out", tmp_path / "out", "--task", "mri-discs")
    shown = path if case != "MetaImage data short" else tmp_path / "p.raw"
    assert_error(outcome, f"{shown}: ")
    assert fragment in outcome.errors[0], outcome.errors[0]


def test_analyze_batch_reports_every_bad_input(tmp_path, spinedx):
    first, second = _nifti_truncated(tmp_path), _meta_outside(tmp_path)
    outcome = spinedx("analyze", first, second, "--out", tmp_path / "out", "--task", "mri-discs")
    assert_error(outcome, f"{first}: compressed file is truncated")
    assert len(outcome.errors) == 2 and outcome.errors[1].startswith(f"error: {second}: ElementDataFile")


def test_voxel_budget_from_the_environment(tmp_path, spinedx, monkeypatch):
    path = write_volume(tmp_path / "v.nii.gz", phantom())
    monkeypatch.setenv("SPINEDX_MAX_VOXELS", "1000")
    assert_error(
        spinedx("analyze", path, "--out", tmp_path / "out", "--task", "mri-discs"),
        f"{path}: volume is 12x48x40",
    )


# --------------------------------------------------------------------------- memory bounded: the real entry point under a limit


_PEAK_REPORTER = """
import atexit, runpy, sys
target = sys.argv[1]
def report():
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS into a forked child's ru_maxrss.
    with open(target, "w") as out:
        out.write(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
atexit.register(report)
sys.argv = ["spinedx", *sys.argv[2:]]
runpy.run_module("spinedx", run_name="__main__")
"""


def _run_limited(args: list, limit_bytes: int, logs: Path) -> tuple[int, str, int]:
    """``python -m spinedx args`` under RLIMIT_AS: (exit code, stderr, the child's peak RSS in kB)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _PEAK_REPORTER, logs / "peak_kb", *args]
    done = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, preexec_fn=limit, env=env, timeout=180
    )
    return done.returncode, done.stderr, int((logs / "peak_kb").read_text())


def test_analyze_of_a_144_megapixel_png_under_an_address_space_limit(tmp_path):
    bomb = huge_png(tmp_path / "bomb.png", 12000, 12000)  # 140 kB on disk; 4.6 GB as float64
    args = ["analyze", bomb, "--out", tmp_path / "out", "--task", "mri-discs"]
    # The limit leaves room for importing torch (about 4 GB of address space) but not for decoding.
    code, stderr, peak_kb = _run_limited(args, 4_500_000_000, tmp_path)
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.splitlines()[0].startswith(f"error: {bomb}: image is 12000x12000 pixels")
    assert peak_kb < 1_500_000  # the issue measured 5.5 GB before the budget


# ---------------------------------------------------------------- output locations, recipes, options


def _a_file(tmp: Path) -> Path:
    (tmp / "taken").write_text("x")
    return tmp / "taken"


def _below_a_file(tmp: Path) -> Path:
    return _a_file(tmp) / "sub"


def _in_proc(tmp: Path) -> Path:
    return Path("/proc/spinedx-out")


OUTPUT_CASES = {
    "analyze into a file": (
        lambda t, out: ["analyze", t / "x.png", "--task", "mri-discs", "--out", out],
        _a_file,
    ),
    "analyze below a file": (lambda t, out: ["analyze", t / "x.png", "--out", out], _below_a_file),
    "analyze into /proc": (lambda t, out: ["analyze", t / "x.png", "--out", out], _in_proc),
    "synth xray into a file": (lambda t, out: ["synth", "xray", "--out", out, "--n", "2"], _a_file),
    "synth mri into /proc": (lambda t, out: ["synth", "mri", "--out", out, "--patients", "1"], _in_proc),
    "train into a file": (lambda t, out: ["train", "configs/xray_lesions.yaml", "--out", out], _a_file),
    "evaluate into /proc": (lambda t, out: ["evaluate", t, "--out", out], _in_proc),
    "evaluate-discs into a file": (lambda t, out: ["evaluate-discs", "--data", t, "--out", out], _a_file),
    "evaluate-seg below a file": (lambda t, out: ["evaluate-seg", "--data", t, "--out", out], _below_a_file),
    "predict into a folder": (lambda t, out: ["predict", t, t / "x.png", "--out", out], lambda t: t),
    "deid into /proc": (lambda t, out: ["deid", t, out], _in_proc),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_output_location_is_checked_before_any_work(tmp_path, spinedx, case):
    command, make_out = OUTPUT_CASES[case]
    out = make_out(tmp_path)
    outcome = spinedx(*command(tmp_path, out))
    assert_error(outcome, str(out))


RECIPE_CASES = {
    "empty": ("", "the recipe is empty"),
    "a list": ("- a\n- b\n", "expected a mapping at the top level"),
    "unknown task": ("task: knee-mri\nname: x\n", "field 'task': 'knee-mri' is not a trainable task"),
    "typo in a section": ("name: x\ntrain:\n  epochz: 3\n", "field 'train.epochz'"),
    "mri-discs without data paths": (
        "task: mri-discs\nname: x\nlocalizer: {}\ngrader: {}\n",
        "field 'localizer",
    ),
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_recipes_are_one_line(tmp_path, spinedx, monkeypatch, case):
    text, fragment = RECIPE_CASES[case]
    monkeypatch.delenv("SPINEDX_DATA", raising=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    outcome = spinedx("train", recipe, "--out", tmp_path / "run")
    assert_error(outcome, f"{recipe}: {fragment}")


@pytest.mark.parametrize("command", [["evaluate", "RUN"], ["evaluate-discs", "--data", "RUN"]])
def test_negative_bootstrap_is_refused_before_work(tmp_path, spinedx, command):
    args = [str(tmp_path) if part == "RUN" else part for part in command]
    outcome = spinedx(*args, "--bootstrap", "-5", "--out", tmp_path / "out")
    assert_error(outcome, "--bootstrap: expected a number of resamples >= 0, got -5")


def test_a_slice_too_small_for_a_spine_names_the_file_and_the_batch_goes_on(tmp_path, spinedx):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((12, 40), 128, dtype=np.uint8)).save(tiny)
    other = tmp_path / "also_tiny.png"
    Image.fromarray(np.full((40, 8), 128, dtype=np.uint8)).save(other)
    outcome = spinedx("analyze", tiny, other, "--task", "mri-discs", "--out", tmp_path / "out")
    assert_error(outcome, str(tiny))
    assert len(outcome.errors) == 2 and str(other) in outcome.errors[1]
