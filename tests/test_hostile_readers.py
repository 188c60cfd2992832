"""Readers under hostile input: pixel budgets, truncated volumes, NaN voxels, reads outside roots,
degenerate geometry. The file builders here are shared with test_hostile_corpus.py."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinedx.errors import InputError
from spinedx.io.annotations import resolve_image_path
from spinedx.io.images import read_image
from spinedx.io.limits import MAX_PIXELS_ENV, MAX_VOXELS_ENV, MIN_SPINE_SIDE, check_volume_size
from spinedx.io.volumes import read_sagittal
from test_io_images import make_dicom, save

# --------------------------------------------------------------------------- builders


def huge_png(path: Path, width: int, height: int) -> Path:
    """A black ``width`` x ``height`` 8-bit PNG of a few hundred kB, written without the pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def phantom(shape=(40, 48, 12)) -> np.ndarray:
    """A (z, y, x) float32 volume with structure (not constant), values 1..2."""
    z, y, x = np.indices(shape)
    return (1.0 + ((y // 6 + x // 4 + z) % 3) / 2.0).astype(np.float32)


def write_volume(path: Path, array: np.ndarray) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def truncate(path: Path, keep: float = 1 / 3) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def metaimage(folder: Path, data_file: str, array: np.ndarray | None = None) -> Path:
    """``folder/v.mhd`` naming ``data_file``; with ``array`` the raw data is written there too."""
    array = phantom() if array is None else array
    z, y, x = array.shape
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / "v.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"ElementSpacing = 1 1 1\nDimSize = {x} {y} {z}\nElementType = MET_FLOAT\n"
        f"ElementDataFile = {data_file}\n"
    )
    return header


# --------------------------------------------------------------------------- pixel budget


def test_huge_png_is_refused_from_its_header_under_an_address_space_limit(tmp_path):
    png = huge_png(tmp_path / "bomb.png", 12000, 12000)
    assert png.stat().st_size < 400_000
    script = textwrap.dedent(
        f"""
        import resource
        limit = 1_500_000_000  # decoding 144 MP as float32 alone would take 576 MB more than is free
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from spinedx.errors import InputError
        from spinedx.io.images import read_image
        try:
            read_image({str(png)!r})
        except InputError as exc:
            print(exc)
        # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS into a forked child's ru_maxrss.
        print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).strip())
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    message, rss = done.stdout.splitlines()
    assert message == (
        f"{png}: image is 12000x12000 pixels (144,000,000 pixels), more than the 64,000,000 pixels "
        f"a slice may have; not decoded (raise {MAX_PIXELS_ENV} to allow it)"
    )
    assert int(rss.split()[1]) < 300_000, rss  # kB: no decode happened


def test_pixel_budget_is_configurable(tmp_path, monkeypatch):
    Image.new("L", (40, 30)).save(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1_000")
    with pytest.raises(
        InputError, match=r"a\.png: image is 40x30 pixels \(1,200 pixels\), more than the 1,000"
    ):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    assert read_image(tmp_path / "a.png").pixels.shape == (30, 40)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=f"^{MAX_PIXELS_ENV}: 'lots' is not a positive whole number"):
        read_image(tmp_path / "a.png")


def test_dicom_rows_columns_are_checked_before_decoding(tmp_path):
    ds = make_dicom(np.zeros((16, 16), np.uint16))
    ds.Rows, ds.Columns = 60000, 60000  # the pixel data is tiny: decoding is never attempted
    path = save(ds, tmp_path / "big.dcm")
    with pytest.raises(InputError, match=r"big\.dcm: image is 60000x60000 pixels"):
        read_image(path)


def test_multiframe_dicom_voxel_budget(tmp_path, monkeypatch):
    path = save(make_dicom(np.zeros((4, 16, 16), np.uint16)), tmp_path / "frames.dcm")
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    with pytest.raises(
        InputError, match=r"frames\.dcm: volume is 16x16x4 voxels \(1,024 voxels\), more than"
    ):
        read_sagittal(path)


def test_volume_budget_from_the_nifti_header(tmp_path, monkeypatch):
    path = write_volume(tmp_path / "v.nii.gz", phantom())
    monkeypatch.setenv(MAX_VOXELS_ENV, "10000")
    with pytest.raises(InputError, match=r"v\.nii\.gz: volume is 12x48x40 voxels"):
        read_sagittal(path)


def test_volume_slice_budget():
    with pytest.raises(InputError, match="a slice of it has 100,000,000 pixels"):
        check_volume_size(Path("v.nii"), (10000, 10000, 2))


# --------------------------------------------------------------------------- volumes read whole or not at all


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.mha"])
def test_truncated_volume_is_an_error_not_zero_filled(tmp_path, name):
    path = truncate(write_volume(tmp_path / name, phantom()))
    with pytest.raises(InputError, match="truncated") as info:
        read_sagittal(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_corrupt_gzip_volume_is_an_error(tmp_path):
    path = write_volume(tmp_path / "v.nii.gz", phantom())
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(
        InputError, match=r"^.*v\.nii\.gz: (compressed file is corrupt|compressed file is truncated)"
    ):
        read_sagittal(path)


def test_nan_voxels_are_reported_with_their_share_and_drawn_dark(tmp_path):
    array = phantom()
    array[:, :10, :] = np.nan
    array[0, 0, 0] = np.inf
    out = read_sagittal(write_volume(tmp_path / "v.nii.gz", array))
    assert np.isfinite(out.pixels).all()
    notes = [n for n in out.warnings if "NaN or infinite" in n]
    assert len(notes) == 1, out.warnings
    share = float(notes[0].split("%")[0])
    assert share == pytest.approx(100 * (10 * 40 * 12 + 1) / array.size, abs=0.05)


def test_nan_voxels_of_a_metaimage_are_reported_too(tmp_path):
    array = phantom()
    array[:, :10, :] = np.nan
    out = read_sagittal(write_volume(tmp_path / "v.mha", array))
    assert np.isfinite(out.pixels).all()
    assert any("NaN or infinite" in note and "lowest intensity" in note for note in out.warnings)


def test_metaimage_data_file_outside_its_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    phantom().tofile(elsewhere / "p.raw")
    header = metaimage(tmp_path / "case", "../elsewhere/p.raw")
    with pytest.raises(
        InputError, match=r"v\.mhd: ElementDataFile: data file '\.\./elsewhere/p\.raw' points outside"
    ):
        read_sagittal(header)
    header = metaimage(tmp_path / "case", str(elsewhere / "p.raw"))
    with pytest.raises(InputError, match="is an absolute path"):
        read_sagittal(header)


def test_metaimage_data_file_missing_or_short_is_named(tmp_path):
    header = metaimage(tmp_path, "p.raw")
    with pytest.raises(InputError, match=r"v\.mhd: ElementDataFile: the data file .*p\.raw is missing"):
        read_sagittal(header)
    phantom().tofile(tmp_path / "p.raw")
    assert read_sagittal(header).pixels.shape == (40, 48)
    truncate(tmp_path / "p.raw", 0.5)
    with pytest.raises(InputError, match=r"p\.raw: data file of .*v\.mhd is truncated: 46,080 bytes where"):
        read_sagittal(header)


def test_metaimage_symlinked_data_file_pointing_out_is_refused(tmp_path):
    phantom().tofile(tmp_path / "real.raw")
    header = metaimage(tmp_path / "case", "p.raw")
    (tmp_path / "case" / "p.raw").symlink_to(tmp_path / "real.raw")
    with pytest.raises(InputError, match="points outside .* through a symlink"):
        read_sagittal(header)


# --------------------------------------------------------------------------- degenerate geometry


def test_too_thin_slice_is_an_input_error_naming_the_file(tmp_path):
    Image.new("L", (300, 5), 80).save(tmp_path / "thin.png")
    assert read_sagittal(tmp_path / "thin.png").pixels.shape == (5, 300)  # readable on its own
    with pytest.raises(InputError, match=r"thin\.png: image is 300x5 pixels \(width x height\); a spine"):
        read_sagittal(tmp_path / "thin.png", min_side=MIN_SPINE_SIDE)


def test_volume_with_few_cranio_caudal_voxels_names_the_axis(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(phantom((5, 64, 12)))  # (z, y, x): 5 slices along LPS superior
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: volume has only 5 along the cranio-caudal axis"):
        read_sagittal(path, min_side=MIN_SPINE_SIDE)


# --------------------------------------------------------------------------- reads stay inside the image folder


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("L", (40, 40)).save(root / "a.png")
    Image.new("L", (40, 40)).save(tmp_path / "secret.png")
    (root / "sub").mkdir()
    Image.new("L", (40, 40)).save(root / "sub" / "b.png")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    return root


@pytest.mark.parametrize(
    ("image_id", "fragment"),
    [
        ("../secret", "image_id '../secret.png' points outside"),
        ("sub/../../secret", "image_id 'sub/../../secret.png' points outside"),
        ("/etc/passwd", "image_id '/etc/passwd.png' is an absolute path"),
        ("link", "image_id 'link.png' points outside .* through a symlink"),
        ("a\x00b", "image_id 'a.x00b.png' contains a NUL character"),
    ],
)
def test_image_ids_cannot_leave_the_image_folder(image_root, image_id, fragment):
    with pytest.raises(InputError, match=f"^ann.csv row 9: {fragment}"):
        resolve_image_path(image_root, image_id, where="ann.csv row 9")


def test_image_ids_inside_the_folder_resolve(image_root):
    assert resolve_image_path(image_root, "a") == image_root / "a.png"
    assert resolve_image_path(image_root, "sub/b") == image_root / "sub" / "b.png"
    assert resolve_image_path(image_root, "sub/../a") == image_root / "sub/../a.png"
    assert resolve_image_path(image_root, "x" * 5000) is None  # too long for the file system: absent
