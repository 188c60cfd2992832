"""read_image: PNG/JPEG and DICOM decoding, grey-scale transforms and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from conftest import SHARED_DATA
from spinedx.errors import InputError
from spinedx.io.images import LoadedImage, read_image

PATIENT_NAME = "Doe^Jane"
REAL_IMAGES = SHARED_DATA / "xray-vertebrae-ap" / "train" / "images"
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def make_dicom(
    arr: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags,
) -> Dataset:
    """A DX data set holding ``arr`` (2-D, or 3-D for multi-frame), uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "SECRET-ID-123"
    ds.Modality = "DX"
    ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(shape=(16, 20), high=4095, dtype=np.uint16) -> np.ndarray:
    return np.linspace(0, high, num=shape[0] * shape[1]).reshape(shape).round().astype(dtype)


# --------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_grey(tmp_path):
    arr = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert isinstance(image, LoadedImage)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (16, 16)
    np.testing.assert_allclose(image.pixels, arr / 255.0, atol=1e-6)
    assert image.modality is None and image.pixel_spacing_mm is None and image.bits_stored == 8
    assert (image.height, image.width) == (16, 16)


def test_png_16bit(tmp_path):
    arr = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.bits_stored == 16
    np.testing.assert_allclose(image.pixels, arr / 65535.0, atol=1e-6)


def test_rgb_jpeg_becomes_grey(tmp_path):
    rgb = np.zeros((12, 10, 3), dtype=np.uint8)
    rgb[:, 5:] = 200
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape == (12, 10)
    assert image.pixels[:, :3].max() < 0.1 and image.pixels[:, 7:].min() > 0.7


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1"])
def test_other_pil_modes_become_2d(tmp_path, mode):
    Image.new("RGB", (8, 6), (255, 255, 255)).convert(mode).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.pixels.shape == (6, 8)
    assert np.allclose(image.pixels, 1.0)


def test_constant_png_is_fine(tmp_path):
    Image.new("L", (5, 4), 0).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png").pixels, np.zeros((4, 5), np.float32))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)


def test_truncated_png(tmp_path):
    Image.fromarray(ramp((64, 64), 255, np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"a\.png: cannot decode image \(") as info:
        read_image(tmp_path / "a.png")
    assert "\n" not in str(info.value)


def test_garbage_jpeg(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(InputError, match=r"a\.jpg: cannot decode image"):
        read_image(tmp_path / "a.jpg")


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_IMAGES.is_dir(), reason="shared/data/xray-vertebrae-ap not present")
def test_real_jpegs_load():
    files = sorted(REAL_IMAGES.iterdir())[:5]
    assert files
    for path in files:
        image = read_image(path)
        assert image.pixels.ndim == 2 and image.pixels.dtype == np.float32
        assert 0.0 <= image.pixels.min() <= image.pixels.max() <= 1.0
        assert image.pixels.max() > image.pixels.min()


# --------------------------------------------------------------------------- DICOM: transforms


def test_dicom_minmax_when_no_voi(tmp_path):
    arr = ramp(high=4095)
    path = save(make_dicom(arr, bits_stored=12, PixelSpacing=[0.15, 0.2]), tmp_path / "a.dcm")
    image = read_image(path)
    assert image.modality == "DX"
    assert image.bits_stored == 12
    assert image.pixel_spacing_mm == (0.15, 0.2)
    np.testing.assert_allclose(image.pixels, arr / 4095.0, atol=1e-6)


def test_dicom_imager_pixel_spacing(tmp_path):
    path = save(make_dicom(ramp(), ImagerPixelSpacing=[0.1, 0.1]), tmp_path / "a.dcm")
    assert read_image(path).pixel_spacing_mm == (0.1, 0.1)


def test_monochrome1_is_inverted(tmp_path):
    arr = ramp(high=4095)
    mono2 = read_image(save(make_dicom(arr, bits_stored=12), tmp_path / "m2.dcm")).pixels
    mono1 = read_image(save(make_dicom(arr, photometric="MONOCHROME1", bits_stored=12), tmp_path / "m1.dcm"))
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2, atol=1e-6)
    assert mono1.pixels[0, 0] == pytest.approx(1.0)  # lowest stored value is white in MONOCHROME1


def test_window_center_width(tmp_path):
    arr = np.array([[0, 1000, 1500], [2000, 2500, 4095]], dtype=np.uint16)
    ds = make_dicom(arr, bits_stored=12, WindowCenter=2000, WindowWidth=1001)
    image = read_image(save(ds, tmp_path / "a.dcm"))
    # LINEAR (PS3.3 C.11.2.1.2): x <= c - 0.5 - (w-1)/2 -> 0, x > c - 0.5 + (w-1)/2 -> 1
    expected = np.clip(((arr - 1999.5) / 1000.0) + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-4)
    assert image.pixels[0, 0] == 0.0 and image.pixels[1, 2] == 1.0


def test_window_with_multiple_values_uses_first(tmp_path):
    arr = np.array([[0, 2000, 4095]], dtype=np.uint16)
    ds = make_dicom(arr, bits_stored=12, WindowCenter=[2048, 100], WindowWidth=[4096, 50])
    image = read_image(save(ds, tmp_path / "a.dcm"))
    np.testing.assert_allclose(image.pixels, [[0.0, 2000 / 4095, 1.0]], atol=2e-3)


def test_signed_16bit_with_rescale_and_window(tmp_path):
    stored = np.array([[-1000, -200, 0], [100, 500, 2000]], dtype=np.int16)
    ds = make_dicom(
        stored,
        bits_stored=16,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=-824,  # window over rescaled values (-1024 .. -624)
        WindowWidth=401,
    )
    assert ds.PixelRepresentation == 1
    image = read_image(save(ds, tmp_path / "a.dcm"))
    rescaled = stored.astype(np.float64) * 2 - 1024
    expected = np.clip((rescaled - (-824.5)) / 400.0 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-4)


def test_signed_12bit_minmax(tmp_path):
    stored = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    image = read_image(save(make_dicom(stored, bits_stored=12), tmp_path / "a.dcm"))
    np.testing.assert_allclose(image.pixels, (stored + 2048) / 4095.0, atol=1e-6)


def test_voi_lut_sequence(tmp_path):
    arr = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], dtype=np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [8, 0, 16])
    item.add_new("LUTData", "OW", np.array([0, 0, 100, 200, 300, 400, 1000, 1000], "<u2").tobytes())
    ds = make_dicom(arr, bits_stored=12, VOILUTSequence=Sequence([item]), WindowCenter=2, WindowWidth=1)
    image = read_image(save(ds, tmp_path / "a.dcm"))
    # the LUT wins over the window; its own output range (0..1000) maps to black..white
    expected = np.array([[0, 0, 100, 200], [300, 400, 1000, 1000]]) / 1000.0
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


def test_constant_dicom_gives_zeros(tmp_path):
    arr = np.full((4, 5), 700, dtype=np.uint16)
    image = read_image(save(make_dicom(arr, bits_stored=12), tmp_path / "a.dcm"))
    assert np.array_equal(image.pixels, np.zeros((4, 5), np.float32))


def test_suffixless_dicom_detected_by_preamble(tmp_path):
    arr = ramp()
    save(make_dicom(arr, bits_stored=12), tmp_path / "a.dcm")
    shutil.copy(tmp_path / "a.dcm", tmp_path / "0a1b2c")
    np.testing.assert_allclose(read_image(tmp_path / "0a1b2c").pixels, arr / 4095.0, atol=1e-6)


def test_raw_dataset_without_file_meta(tmp_path):
    arr = ramp()
    ds = make_dicom(arr, bits_stored=12)
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "raw.dcm", ds, implicit_vr=True, little_endian=True)
    assert (tmp_path / "raw.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(tmp_path / "raw.dcm").pixels, arr / 4095.0, atol=1e-6)


def test_multiframe_takes_first_frame(tmp_path):
    frames = np.stack([np.full((4, 4), v, dtype=np.uint16) for v in (0, 1000, 2000)])
    frames[:, 0, 0] = 0  # every frame spans 0..4095, so min-max keeps the fill value's place
    frames[:, 0, 1] = 4095
    path = save(make_dicom(frames, bits_stored=12), tmp_path / "a.dcm")
    first = read_image(path)
    assert first.pixels.shape == (4, 4)
    assert first.pixels[1, 1] == pytest.approx(0.0)
    last = read_image(path, frame=2)
    assert last.pixels[1, 1] == pytest.approx(2000 / 4095, abs=1e-6)
    with pytest.raises(InputError, match="frame 3 requested but the file has 3 frame"):
        read_image(path, frame=3)


def test_colour_dicom_becomes_grey(tmp_path):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, 3:] = 255
    image = read_image(save(make_dicom(rgb, photometric="RGB", bits_stored=8), tmp_path / "a.dcm"))
    assert image.pixels.shape == (4, 6)
    np.testing.assert_allclose(image.pixels[:, 3:], 1.0, atol=1e-6)
    np.testing.assert_allclose(image.pixels[:, :3], 0.0, atol=1e-6)


# --------------------------------------------------------------------------- DICOM: compression


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=["jpeg2000-lossless", "rle"])
def test_compressed_matches_uncompressed(tmp_path, syntax):
    arr = ramp((64, 48), high=4095)  # OpenJPEG's default 6 resolutions need >= 32 px a side
    plain = read_image(save(make_dicom(arr, bits_stored=12), tmp_path / "plain.dcm"))
    ds = make_dicom(arr, bits_stored=12)
    ds.compress(syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    packed = read_image(save(ds, tmp_path / "packed.dcm"))
    np.testing.assert_array_equal(packed.pixels, plain.pixels)


def test_jpeg2000_signed_with_rescale(tmp_path):
    stored = np.tile(np.array([[-1000, -200, 0, 7], [100, 500, 2000, 9]], dtype=np.int16), (32, 16))
    tags = {"RescaleSlope": 1, "RescaleIntercept": -1024}
    plain = read_image(save(make_dicom(stored, bits_stored=16, **tags), tmp_path / "plain.dcm"))
    ds = make_dicom(stored, bits_stored=16, **tags)
    ds.compress(JPEG2000Lossless)
    np.testing.assert_array_equal(read_image(save(ds, tmp_path / "j2k.dcm")).pixels, plain.pixels)


def test_jpeg_ls_lossless_decodes():
    # No JPEG-LS encoder ships with the project (pydicom's needs pyjpegls); decoding is done by
    # pylibjpeg-libjpeg. Use pydicom's bundled JPEG-LS file and its uncompressed twin.
    jls, plain = PYDICOM_TEST_FILES / "MR_small_jpeg_ls_lossless.dcm", PYDICOM_TEST_FILES / "MR_small.dcm"
    if not (jls.is_file() and plain.is_file()):
        pytest.skip("pydicom's bundled JPEG-LS test files are not installed")
    assert pydicom.dcmread(jls).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    decoded = read_image(jls)
    assert decoded.modality == "MR"
    np.testing.assert_array_equal(decoded.pixels, read_image(plain).pixels)


# --------------------------------------------------------------------------- DICOM: errors


def test_corrupt_dicom(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 40 + b"definitely not dicom" * 3)
    with pytest.raises(InputError, match=r"bad\.dcm: (not a DICOM image|cannot read DICOM file)") as info:
        read_image(tmp_path / "bad.dcm")
    assert "\n" not in str(info.value)


def test_truncated_dicom_pixel_data(tmp_path):
    path = save(make_dicom(ramp((64, 64))), tmp_path / "a.dcm")
    data = path.read_bytes()
    path.write_bytes(data[:-2000])
    with pytest.raises(InputError, match=r"a\.dcm: cannot (decode DICOM pixel data|read DICOM file)") as info:
        read_image(path)
    assert PATIENT_NAME not in str(info.value) and "SECRET-ID" not in str(info.value)


def test_dicom_without_pixel_data(tmp_path):
    ds = make_dicom(ramp())
    del ds.PixelData
    with pytest.raises(InputError, match=r"a\.dcm: DICOM file has no pixel data"):
        read_image(save(ds, tmp_path / "a.dcm"))


def test_unsupported_transfer_syntax(tmp_path):
    ds = make_dicom(ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    path = tmp_path / "a.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    with pytest.raises(InputError, match=r"a\.dcm: unsupported DICOM transfer syntax .*1\.2\.3\.4\.5\.6\.7"):
        read_image(path)


def test_missing_decoder_plugin_is_named(tmp_path, monkeypatch):
    arr = ramp()
    ds = make_dicom(arr, bits_stored=12)
    ds.compress(RLELossless)
    path = save(ds, tmp_path / "a.dcm")

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-rle>=2.0"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(
        InputError, match=r"a\.dcm: cannot decode transfer syntax 'RLE Lossless'.*pylibjpeg-rle"
    ):
        read_image(path)


def test_no_patient_identifiers_in_logs(tmp_path, caplog, recwarn):
    ds = make_dicom(ramp(), WindowCenter=10, WindowWidth=0)  # unusable window: warns, falls back
    caplog.set_level("DEBUG")
    read_image(save(ds, tmp_path / "a.dcm"))
    text = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "window" in caplog.text
    assert PATIENT_NAME not in text and "SECRET-ID" not in text
