"""`spinedx analyze` with the bundled models on a real spider-sagittal slice, as PNG, NIfTI,
MetaImage and DICOM series, and in a batch with bad inputs. Skips without ../shared/data."""

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from conftest import SPIDER
from spinedx.cli import app
from spinedx.evaluation.detection import box_iou
from test_io_volumes import I, P, dicom_slice

pytestmark = pytest.mark.skipif(
    not (SPIDER / "discs.csv").is_file(), reason="shared/data/spider-sagittal not present"
)

IMAGE_ID = "104_t2"  # a series with reference boxes (7 discs)
SPACING_MM = 0.8
N_SLICES = 5


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.asarray(Image.open(SPIDER / "images" / f"{IMAGE_ID}.png"), dtype=np.float32)


def _iou(a, b) -> float:
    return float(box_iou([a], [b])[0, 0])


def _analyze(*args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(app, ["analyze", *args, "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.stderr


def _volume(pixels: np.ndarray, path) -> None:
    """The slice repeated left-right, stored like the display: rows run caudal, columns posterior."""
    volume = sitk.GetImageFromArray(np.repeat(pixels[None], N_SLICES, axis=0))
    volume.SetSpacing((SPACING_MM, SPACING_MM, 4.0))
    volume.SetDirection(tuple(np.array([P, I, (1.0, 0.0, 0.0)]).T.ravel()))
    sitk.WriteImage(volume, str(path))


def _dicom_series(pixels: np.ndarray, folder) -> None:
    folder.mkdir()
    series = generate_uid()
    for k in range(N_SLICES):
        # Row direction posterior, column direction inferior: slices step along patient right.
        ds = dicom_slice(
            pixels * 16, iop=(*P, *I), ipp=(-4.0 * k, 0.0, 0.0), spacing=(SPACING_MM, SPACING_MM),
            series_uid=series, number=k + 1,
        )  # fmt: skip
        ds.save_as(folder / f"IM{k}.dcm", enforce_file_format=True)


def test_png_gives_the_reference_discs_and_levels(tmp_path):
    code, (findings,), _ = _analyze(str(SPIDER / "images" / f"{IMAGE_ID}.png"), "--task", "mri-discs",
                                    "--out", str(tmp_path))  # fmt: skip
    assert code == 0
    assert findings["schema"] == "spinedx/findings@1" and findings["input"]["task"] == "mri-discs"
    assert findings["warnings"] == []
    reference = pd.read_csv(SPIDER / "discs.csv").query("image_id == @IMAGE_ID")
    predicted = {disc["level"]: disc["box"] for disc in findings["discs"]}
    for row in reference.itertuples():
        assert row.level in predicted, row.level
        assert _iou(predicted[row.level], [row.xmin, row.ymin, row.xmax, row.ymax]) >= 0.5
    out = tmp_path / IMAGE_ID
    assert {"findings.json", "overlay.png", "report.html"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("kind", ["nii.gz", "mha", "dicom-series"])
def test_volumes_give_the_same_levels_with_millimetres(tmp_path, pixels, kind):
    _, (plain,), _ = _analyze(str(SPIDER / "images" / f"{IMAGE_ID}.png"), "--task", "mri-discs",
                              "--out", str(tmp_path / "png"))  # fmt: skip
    if kind == "dicom-series":
        path = tmp_path / "series"
        _dicom_series(pixels, path)
        args = [str(path)]  # the task comes from the DICOM Modality (MR)
    else:
        path = tmp_path / f"volume.{kind}"
        _volume(pixels, path)
        args = [str(path), "--task", "mri-discs"]
    code, (findings,), stderr = _analyze(*args, "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    assert findings["input"]["pixel_spacing_mm"] == pytest.approx([SPACING_MM, SPACING_MM])
    assert findings["input"]["slice_index"] == N_SLICES // 2
    assert [d["level"] for d in findings["discs"]] == [d["level"] for d in plain["discs"]]
    for disc, reference in zip(findings["discs"], plain["discs"], strict=True):
        assert _iou(disc["box"], reference["box"]) > 0.8
        height = disc["measurements"]["height_mm"]
        assert height == pytest.approx(disc["measurements"]["height_px"] * SPACING_MM, rel=1e-3)


def test_a_batch_goes_on_past_bad_inputs(tmp_path, pixels):
    good = SPIDER / "images" / f"{IMAGE_ID}.png"
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(noise)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    turned = tmp_path / "turned.png"
    Image.fromarray(np.rot90(pixels).astype(np.uint8)).save(turned)
    code, findings, stderr = _analyze(str(corrupt), str(noise), str(turned), str(good), "--task", "mri-discs",
                                      "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2
    assert "corrupt.dcm" in stderr and stderr.count("error:") == 1
    by_stem = {f["input"]["image_id"]: f for f in findings}
    assert set(by_stem) == {"noise", "turned", IMAGE_ID}
    assert by_stem["noise"]["discs"] == [] and "not analysed" in by_stem["noise"]["warnings"][0]
    assert any("rotated or mirrored" in w for w in by_stem["turned"]["warnings"])
    assert len(by_stem[IMAGE_ID]["discs"]) >= 5
    assert not (tmp_path / "out" / "noise" / "masks.png").exists()


def test_mixed_size_series_is_one_clear_error(tmp_path, pixels):
    _dicom_series(pixels, tmp_path / "series")
    first = pydicom.dcmread(tmp_path / "series" / "IM0.dcm")
    odd = dicom_slice(np.zeros((40, 30)), iop=(*P, *I), ipp=(-20.0, 0.0, 0.0), spacing=(SPACING_MM, SPACING_MM),
                      series_uid=first.SeriesInstanceUID, number=99)  # fmt: skip
    odd.save_as(tmp_path / "series" / "odd.dcm", enforce_file_format=True)
    code, findings, stderr = _analyze(str(tmp_path / "series"), "--out", str(tmp_path / "out"))
    assert code == 2 and findings == []
    assert stderr.startswith("error: ") and "different sizes" in stderr and stderr.count("\n") == 1
