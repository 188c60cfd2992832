"""Bad input through the CLI: one clear line naming the file/row/field, exit code 2, no traceback."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, tiny_overrides


def spinedx(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spinedx", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def train(config: str, data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [item for override in tiny_overrides(data_dir, *extra) for item in ("--set", override)]
    return spinedx("train", REPO / "configs" / config, "--out", out, *sets)


def copy_dataset(source: Path, target: Path, rows: pd.DataFrame | None = None) -> Path:
    shutil.copytree(source / "images", target / "images")
    (rows if rows is not None else pd.read_csv(source / "annotations.csv")).to_csv(
        target / "annotations.csv", index=False
    )
    return target


def test_malformed_csv(tmp_path, tiny_xray):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,lesion_type,xmin,ymin,xmax\nimg1,Osteophytes,1,2,3\n")
    assert_clean_error(spinedx("data", "check", bad, "--images", tiny_xray / "images"), "bad.csv", "ymax")


def test_non_numeric_coordinate_names_the_row(tmp_path, tiny_xray):
    rows = pd.read_csv(tiny_xray / "annotations.csv").astype({"xmin": object})
    rows.loc[3, "xmin"] = "abc"
    data = copy_dataset(tiny_xray, tmp_path / "d", rows)
    result = train("xray_lesions.yaml", data, tmp_path / "run")
    assert_clean_error(result, "row 5", "xmin", "abc")


def test_data_check_reports_missing_image_and_bad_boxes(tmp_path, tiny_xray):
    rows = pd.read_csv(tiny_xray / "annotations.csv")
    boxed = rows.dropna(subset=["xmin"]).index
    rows.loc[boxed[0], "xmin"] = -5
    rows.loc[boxed[1], "xmax"] = 10_000
    data = copy_dataset(tiny_xray, tmp_path / "d", rows)
    missing = sorted((data / "images").glob("*.png"))[0]
    missing.unlink()
    result = spinedx("data", "check", data / "annotations.csv", "--images", data / "images")
    assert result.returncode == 2
    assert missing.stem in result.stdout
    assert "10000" in result.stdout or "out of" in result.stdout.lower()


def test_truncated_png_is_skipped_and_training_goes_on(tmp_path, tiny_xray):
    data = copy_dataset(tiny_xray, tmp_path / "d")
    victim = sorted((data / "images").glob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:200])
    result = train("xray_lesions.yaml", data, tmp_path / "run", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    assert victim.name in result.stdout + result.stderr


def test_empty_dataset(tmp_path, tiny_xray):
    data = copy_dataset(tiny_xray, tmp_path / "d", pd.read_csv(tiny_xray / "annotations.csv").iloc[:0])
    assert_clean_error(train("xray_lesions.yaml", data, tmp_path / "run"), "annotations.csv")


def test_single_class(tmp_path, tiny_xray):
    rows = pd.read_csv(tiny_xray / "annotations.csv")
    rows = rows[rows["lesion_type"] == "Osteophytes"]
    data = copy_dataset(tiny_xray, tmp_path / "d", rows)
    assert_clean_error(train("xray_lesions.yaml", data, tmp_path / "run"), "one class")


def test_offline_imagenet_stops_instead_of_random_init(tmp_path, tiny_xray):
    result = train("thesis.yaml", tiny_xray, tmp_path / "run", "model.pretrained=imagenet")
    assert_clean_error(result, "model.pretrained", "vgg16")


def test_bad_config_value(tmp_path, tiny_xray):
    assert_clean_error(
        train("xray_lesions.yaml", tiny_xray, tmp_path / "run", "model.output=tanh"), "model.output"
    )


@pytest.mark.parametrize("command", [["evaluate"], ["predict"]])
def test_run_dir_without_checkpoint(tmp_path, command):
    args = [*command, tmp_path] + ([tmp_path / "x.png"] if command == ["predict"] else [])
    assert_clean_error(spinedx(*args), "best.pt")


def test_dicom_images_train_beside_png_and_a_corrupt_dicom_is_named(tmp_path, tiny_xray):
    from PIL import Image

    from test_io_images import make_dicom, save

    data = copy_dataset(tiny_xray, tmp_path / "d")
    pngs = sorted((data / "images").glob("*.png"))
    for png in pngs[:10]:  # a dataset mixing PNG and DICOM files
        pixels = (np.asarray(Image.open(png), dtype=np.uint16) * 16).astype(np.uint16)
        save(make_dicom(pixels, bits_stored=12), png.with_suffix(".dcm"))
        png.unlink()
    corrupt = pngs[10].with_suffix(".dcm")
    corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00garbage")
    pngs[10].unlink()

    check = spinedx("data", "check", data / "annotations.csv", "--images", data / "images")
    assert check.returncode == 2 and corrupt.name in check.stdout
    trained = train("xray_lesions.yaml", data, tmp_path / "run", "train.epochs=1")
    assert trained.returncode == 0, trained.stderr
    assert "warning: skipped" in trained.stderr and corrupt.name in trained.stderr
