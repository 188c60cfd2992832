"""read_sagittal / read_sagittal_stack: volumes, DICOM series and 2-D images -> display slices.

The synthetic phantom lives in patient coordinates (LPS, mm: +x left, +y posterior,
+z superior) and is sampled on grids of several orientations. In every output the
cranial-anterior marker must sit top-left (bright) and the caudal-anterior one bottom-left
(mid grey); the cranial marker is absent on the patient's far left (x > 10 mm) so that slice
indices can be checked too.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import SPIDER
from spinedx.errors import InputError
from spinedx.io.volumes import SagittalSlice, read_sagittal, read_sagittal_stack

PATIENT_NAME = "Secret^Patient"
PATIENT_ID = "PID-SECRET-42"

# Axis directions (columns of the direction matrix) in LPS.
L, R = (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)
P, A = (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)
S, I = (0.0, 0.0, 1.0), (0.0, 0.0, -1.0)  # noqa: E741 (anatomical letters)
EXTENT = {"x": 40.0, "y": 60.0, "z": 80.0}  # mm, centred on 0


def phantom(points: np.ndarray) -> np.ndarray:
    """Values at LPS points (..., 3)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    out = np.full(x.shape, 100.0)
    out[(y < -15) & (z > 20) & (x <= 10)] = 1000.0  # cranial-anterior, absent on the far left
    out[(y < -15) & (z < -20)] = 500.0  # caudal-anterior
    return out


def axis_extent(direction) -> float:
    return EXTENT["xyz"[int(np.argmax(np.abs(direction)))]]


def make_image(axes, spacing) -> sitk.Image:
    """A phantom volume whose axis i runs along ``axes[i]`` with ``spacing[i]`` mm."""
    axes = np.array(axes, dtype=float).T  # columns = axis directions
    spacing = np.array(spacing, dtype=float)
    size = np.array([int(round(axis_extent(axes[:, i]) / spacing[i])) + 1 for i in range(3)])
    origin = -axes @ (spacing * (size - 1) / 2)
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    index = np.stack([i, j, k], axis=-1) * spacing
    points = origin + index @ axes.T
    image = sitk.GetImageFromArray(phantom(points).astype(np.float32))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(axes.ravel()))
    return image


def assert_display(pixels: np.ndarray, *, cranial_marker: bool = True) -> None:
    """Cranial-anterior marker top-left, caudal-anterior bottom-left, posterior side dark."""
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    h, w = pixels.shape
    top_left = pixels[: h // 8, : w // 8].mean()
    bottom_left = pixels[-h // 8 :, : w // 8].mean()
    right = pixels[:, -w // 3 :].mean()
    assert right < 0.05
    if cranial_marker:
        assert top_left > 0.95
        assert 0.3 < bottom_left < 0.6
    else:
        assert top_left < 0.05
        assert bottom_left > 0.95


SAGITTAL_PIL = ((P, I, L), (1.0, 1.0, 4.0))  # stored like the display, slices toward left
SAGITTAL_ASR = ((A, S, R), (1.0, 1.0, 4.0))  # mirrored and upside down, slices toward right
AXIAL_LPS = ((L, P, S), (1.0, 1.0, 4.0))
AXIAL_RAS = ((R, A, S), (1.0, 1.0, 4.0))
CORONAL_LSA = ((L, S, A), (1.0, 1.0, 3.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
@pytest.mark.parametrize(
    ("layout", "code", "plane"),
    [
        (SAGITTAL_PIL, "PIL", None),
        (SAGITTAL_ASR, "ASR", None),
        (AXIAL_LPS, "LPS", "axial"),
        (AXIAL_RAS, "RAS", "axial"),
        (CORONAL_LSA, "LSA", "coronal"),
    ],
)
def test_volume_orientations(tmp_path, suffix, layout, code, plane):
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(make_image(*layout), str(path))
    out = read_sagittal(path)
    assert isinstance(out, SagittalSlice)
    assert out.orientation == code
    assert out.path == path
    assert out.n_slices == (41 if plane else 11)  # 40 mm left-right at 4 mm (sagittal) or 1 mm
    assert_display(out.pixels)
    spacing_si = 4.0 if plane == "axial" else 1.0
    spacing_ap = 3.0 if plane == "coronal" else 1.0
    assert out.pixel_spacing_mm == pytest.approx((spacing_si, spacing_ap))
    assert out.pixels.shape == (round(80 / spacing_si) + 1, round(60 / spacing_ap) + 1)
    reformat = [w for w in out.warnings if w.startswith("reformatted")]
    if plane == "axial":
        assert reformat == ["reformatted from axial acquisition; resolution along cranio-caudal is 4 mm"]
    elif plane == "coronal":
        assert reformat == ["reformatted from coronal acquisition; resolution along antero-posterior is 3 mm"]
    else:
        assert reformat == []
    assert not any("orientation missing" in w for w in out.warnings)


def volume_file(tmp_path, layout, name="vol.nii.gz") -> Path:
    path = tmp_path / name
    sitk.WriteImage(make_image(*layout), str(path))
    return path


def test_slice_index_is_the_stored_left_right_index(tmp_path):
    toward_left = volume_file(tmp_path, SAGITTAL_PIL, "pil.nii.gz")  # index 10 = x +20 (left)
    toward_right = volume_file(tmp_path, SAGITTAL_ASR, "asr.nii.gz")  # index 0 = x +20 (left)
    assert read_sagittal(toward_left).slice_index == 5
    assert_display(read_sagittal(toward_left, slice_index=10).pixels, cranial_marker=False)
    assert_display(read_sagittal(toward_left, slice_index=0).pixels)
    assert_display(read_sagittal(toward_right, slice_index=0).pixels, cranial_marker=False)
    assert_display(read_sagittal(toward_right, slice_index=10).pixels)
    axial = volume_file(tmp_path, AXIAL_RAS, "ras.nii.gz")  # axis 0 toward right: index 0 = x +20
    out = read_sagittal(axial, slice_index=0)
    assert out.slice_index == 0 and out.n_slices == 41
    assert_display(out.pixels, cranial_marker=False)
    with pytest.raises(
        InputError, match=r"ras\.nii\.gz: slice 41 requested but the volume has 41 sagittal slices"
    ):
        read_sagittal(axial, slice_index=41)


def test_stack_is_central_and_ordered_right_to_left(tmp_path):
    toward_left = volume_file(tmp_path, SAGITTAL_PIL, "pil.mha")
    toward_right = volume_file(tmp_path, SAGITTAL_ASR, "asr.mha")
    left_stack = read_sagittal_stack(toward_left, n=3)
    right_stack = read_sagittal_stack(toward_right, n=3)
    assert [s.slice_index for s in left_stack] == [4, 5, 6]
    assert [s.slice_index for s in right_stack] == [6, 5, 4]
    for a, b in zip(left_stack, right_stack, strict=True):
        np.testing.assert_allclose(a.pixels, b.pixels)  # same anatomy, same order
    assert [s.slice_index for s in read_sagittal_stack(toward_left, n=4)] == [3, 4, 5, 6]
    assert [s.slice_index for s in read_sagittal_stack(toward_right, n=4)] == [6, 5, 4, 3]
    many = read_sagittal_stack(toward_left, n=13)
    assert [s.slice_index for s in many] == [0, *range(11), 10]
    assert any("only 11 sagittal slices available" in w for w in many[0].warnings)
    with pytest.raises(InputError, match="positive integer"):
        read_sagittal_stack(toward_left, n=0)


def test_stack_is_normalised_jointly(tmp_path):
    path = volume_file(tmp_path, SAGITTAL_PIL, "pil.nii.gz")
    stack = read_sagittal_stack(path, n=11)
    # The far-left slices lack the 1000 marker: on the joint scale their 500 marker stays mid grey.
    assert stack[-1].slice_index == 10
    assert stack[-1].pixels.max() == pytest.approx(400 / 900, abs=0.01)
    assert stack[5].pixels.max() == 1.0


def test_robust_to_hot_voxels(tmp_path):
    image = make_image(*SAGITTAL_PIL)
    array = sitk.GetArrayFromImage(image)
    array[5, 40, 30] = 1e7  # one hot voxel in the mid slice
    hot = sitk.GetImageFromArray(array)
    hot.CopyInformation(image)
    sitk.WriteImage(hot, str(tmp_path / "hot.nii.gz"))
    assert_display(read_sagittal(tmp_path / "hot.nii.gz").pixels)


def test_constant_volume_gives_zeros_and_a_warning(tmp_path):
    image = sitk.Image([8, 9, 10], sitk.sitkInt16) + 7
    sitk.WriteImage(image, str(tmp_path / "flat.mha"))
    out = read_sagittal(tmp_path / "flat.mha")
    assert out.pixels.shape == (10, 9)
    assert not out.pixels.any()
    assert any(w.startswith("constant image") for w in out.warnings)


def test_oblique_volume_warns(tmp_path):
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    axes = ((0.0, c, -s), (0.0, -s, -c), L)  # sagittal, rotated 30 degrees in plane
    sitk.WriteImage(make_image(axes, (1.0, 1.0, 4.0)), str(tmp_path / "oblique.nii.gz"))
    out = read_sagittal(tmp_path / "oblique.nii.gz")
    assert any("oblique by up to 30 degrees" in w for w in out.warnings)


def test_4d_volume_uses_the_first(tmp_path):
    first = sitk.GetArrayFromImage(make_image(*AXIAL_LPS))  # identity direction, like a 4-D default
    four = sitk.GetImageFromArray(np.stack([first, np.zeros_like(first)]), isVector=False)
    four.SetSpacing((1.0, 1.0, 4.0, 2.0))
    sitk.WriteImage(four, str(tmp_path / "4d.nii.gz"))
    out = read_sagittal(tmp_path / "4d.nii.gz")
    assert "4-D volume with 2 volumes; using the first" in out.warnings
    assert out.orientation == "LPS"
    assert_display(out.pixels)


# --------------------------------------------------------------------------- missing orientation


def test_nifti_without_orientation_warns(tmp_path):
    sitk.WriteImage(make_image(*AXIAL_LPS), str(tmp_path / "x.nii"))
    data = bytearray((tmp_path / "x.nii").read_bytes())
    data[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code
    (tmp_path / "bare.nii.gz").write_bytes(gzip.compress(bytes(data)))
    out = read_sagittal(tmp_path / "bare.nii.gz")
    assert any(w.startswith("orientation missing; assumed identity direction (LPS") for w in out.warnings)
    assert out.orientation == "LPS"
    assert_display(out.pixels)  # the phantom was written LPS, so the assumption holds


def test_nifti_with_degenerate_orientation_warns(tmp_path):
    sitk.WriteImage(make_image(*AXIAL_LPS), str(tmp_path / "x.nii"))
    data = bytearray((tmp_path / "x.nii").read_bytes())
    data[252:256] = struct.pack("<hh", 0, 1)  # sform only ...
    data[280:328] = struct.pack("<12f", *([0.0] * 12))  # ... and all zero
    (tmp_path / "degenerate.nii").write_bytes(bytes(data))
    out = read_sagittal(tmp_path / "degenerate.nii")
    assert any(
        w.startswith("orientation missing; assumed identity") and "degenerate" in w for w in out.warnings
    )
    assert_display(out.pixels)


def _edit_mha(path: Path, out: Path, matrix: str | None) -> None:
    raw = path.read_bytes()
    cut = raw.index(b"ElementDataFile")
    lines = raw[:cut].decode().splitlines()
    kept = [line for line in lines if not line.startswith("TransformMatrix")]
    if matrix is not None:
        kept.insert(4, f"TransformMatrix = {matrix}")
    out.write_bytes(("\n".join(kept) + "\n").encode() + raw[cut:])


@pytest.mark.parametrize(
    ("matrix", "degenerate"), [(None, False), ("0 0 0 0 0 0 0 0 0", True), ("1 0 0 1 0 0 0 0 1", True)]
)
def test_metaimage_without_usable_orientation_warns(tmp_path, matrix, degenerate):
    sitk.WriteImage(make_image(*AXIAL_LPS), str(tmp_path / "x.mha"))
    _edit_mha(tmp_path / "x.mha", tmp_path / "bad.mha", matrix)
    out = read_sagittal(tmp_path / "bad.mha")
    missing = [w for w in out.warnings if w.startswith("orientation missing; assumed identity")]
    assert len(missing) == 1
    assert ("degenerate" in missing[0]) == degenerate
    assert_display(out.pixels)


def test_metaimage_with_separate_data_file_and_degenerate_matrix(tmp_path):
    sitk.WriteImage(make_image(*AXIAL_LPS), str(tmp_path / "x.mhd"))
    text = (tmp_path / "x.mhd").read_text()
    lines = [
        "TransformMatrix = 0 0 0 0 0 0 0 0 0" if line.startswith("TransformMatrix") else line
        for line in text.splitlines()
    ]
    (tmp_path / "x.mhd").write_text("\n".join(lines) + "\n")
    out = read_sagittal(tmp_path / "x.mhd")
    assert any("degenerate" in w for w in out.warnings)
    assert_display(out.pixels)


def test_identity_direction_in_header_is_accepted_silently(tmp_path):
    sitk.WriteImage(make_image(*AXIAL_LPS), str(tmp_path / "x.mha"))
    assert "TransformMatrix = 1 0 0 0 1 0 0 0 1" in (tmp_path / "x.mha").read_bytes()[:600].decode("latin-1")
    out = read_sagittal(tmp_path / "x.mha")
    assert not any("orientation missing" in w for w in out.warnings)


def test_unreadable_volume(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not a volume at all")
    with pytest.raises(InputError, match=r"junk\.nii\.gz: cannot read volume \(") as info:
        read_sagittal(tmp_path / "junk.nii.gz")
    assert "\n" not in str(info.value)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mha: file not found"):
        read_sagittal(tmp_path / "nope.mha")


# --------------------------------------------------------------------------- DICOM


def dicom_slice(pixels: np.ndarray, *, iop, ipp, spacing, series_uid, number, **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = number
    if iop is not None:
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    if ipp is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 12)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def plane_geometry(along_row, along_col, spacing, thickness):
    """(rows, cols, positions, IPP of slice k, pixel points of slice k) for a phantom series."""
    r, c = np.array(along_row, float), np.array(along_col, float)
    normal = np.cross(r, c)
    cols = int(round(axis_extent(r) / spacing[1])) + 1
    rows = int(round(axis_extent(c) / spacing[0])) + 1
    n = int(round(axis_extent(normal) / thickness)) + 1
    offsets = (np.arange(n) - (n - 1) / 2) * thickness

    def ipp(k):
        return -r * spacing[1] * (cols - 1) / 2 - c * spacing[0] * (rows - 1) / 2 + normal * offsets[k]

    def points(k):
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return ipp(k) + (jj[..., None] * spacing[1]) * r + (ii[..., None] * spacing[0]) * c

    return rows, cols, n, ipp, points


def write_series(
    folder: Path,
    along_row,
    along_col,
    *,
    spacing=(1.0, 1.0),
    thickness=4.0,
    geometry=True,
    prefix="IM",
    series_uid=None,
    seed=0,
) -> list[Path]:
    """The phantom as a DICOM series, written under shuffled file names."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    rows, cols, n, ipp, points = plane_geometry(along_row, along_col, spacing, thickness)
    names = np.random.default_rng(seed).permutation(n)
    paths = []
    for k in range(n):
        ds = dicom_slice(
            phantom(points(k)),
            iop=(*along_row, *along_col) if geometry else None,
            ipp=ipp(k) if geometry else None,
            spacing=spacing,
            series_uid=series_uid,
            number=k + 1,
            SliceThickness=f"{thickness:g}",
        )
        path = folder / f"{prefix}{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("along_row", "along_col", "code", "plane", "n_slices"),
    [
        (P, I, "PIR", None, 11),  # the usual sagittal IOP 0\1\0\0\0\-1: slices toward right
        (A, S, "ASR", None, 11),  # stored mirrored and upside down
        (L, P, "LPS", "axial", 41),  # axial stack
        (R, A, "RAS", "axial", 41),
    ],
)
def test_dicom_series(tmp_path, along_row, along_col, code, plane, n_slices):
    write_series(tmp_path / "series", along_row, along_col)
    (tmp_path / "series" / "notes.txt").write_text("not DICOM, ignored")
    out = read_sagittal(tmp_path / "series")
    assert out.path == tmp_path / "series"
    assert out.modality == "MR"
    assert out.n_slices == n_slices
    assert out.orientation == code
    assert_display(out.pixels)
    if plane == "axial":
        assert out.pixel_spacing_mm == pytest.approx((4.0, 1.0))
        assert "reformatted from axial acquisition; resolution along cranio-caudal is 4 mm" in out.warnings
    else:
        assert out.pixel_spacing_mm == pytest.approx((1.0, 1.0))
        assert out.pixels.shape == (81, 61)
        assert out.warnings == []


def test_dicom_series_slice_order_comes_from_positions(tmp_path):
    # Slices toward the right (normal of the usual sagittal IOP): stored index 0 = x +20 = left.
    write_series(tmp_path / "s", P, I)
    assert_display(read_sagittal(tmp_path / "s", slice_index=0).pixels, cranial_marker=False)
    assert_display(read_sagittal(tmp_path / "s", slice_index=10).pixels)
    assert [s.slice_index for s in read_sagittal_stack(tmp_path / "s")] == [6, 5, 4]


def test_dicom_series_picks_the_largest_series(tmp_path):
    write_series(tmp_path / "s", L, P, prefix="AX", thickness=8.0)  # 11 axial images
    write_series(tmp_path / "s", P, I, prefix="SAG", thickness=4.0)  # 11 sagittal images ...
    write_series(tmp_path / "extra", P, I, thickness=2.0)  # ... vs 21 sagittal ones
    for path in (tmp_path / "extra").iterdir():
        path.rename(tmp_path / "s" / f"X{path.name}")
    out = read_sagittal(tmp_path / "s")
    assert out.n_slices == 21
    assert any(
        "folder holds 3 DICOM series; using the one with 21 images (22 other images ignored)" in w
        for w in out.warnings
    )
    assert_display(out.pixels)


def test_dicom_series_without_geometry_assumes_sagittal(tmp_path):
    write_series(tmp_path / "s", P, I, geometry=False)
    out = read_sagittal(tmp_path / "s")
    assert any(w.startswith("orientation missing (no usable ImagePositionPatient") for w in out.warnings)
    assert_display(out.pixels)
    assert out.pixel_spacing_mm == pytest.approx((1.0, 1.0))


def test_dicom_series_with_a_garbage_file(tmp_path):
    write_series(tmp_path / "s", P, I)
    (tmp_path / "s" / "IM9999.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    with pytest.raises(InputError, match=r"IM9999\.dcm: ") as info:
        read_sagittal(tmp_path / "s")
    assert PATIENT_NAME not in str(info.value) and PATIENT_ID not in str(info.value)


def test_dicom_series_with_a_truncated_file(tmp_path):
    paths = write_series(tmp_path / "s", P, I)
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) - 2000])
    with pytest.raises(InputError, match=rf"{paths[5].name}: ") as info:
        read_sagittal(tmp_path / "s")
    assert PATIENT_NAME not in str(info.value)


def test_dicom_series_with_mixed_sizes(tmp_path):
    write_series(tmp_path / "s", P, I)
    odd = dicom_slice(
        np.zeros((30, 20)),
        iop=(*P, *I),
        ipp=(30.0, -30.0, 40.0),
        spacing=(1.0, 1.0),
        series_uid=pydicom.dcmread(next((tmp_path / "s").iterdir())).SeriesInstanceUID,
        number=99,
    )
    odd.save_as(tmp_path / "s" / "odd.dcm", enforce_file_format=True)
    with pytest.raises(
        InputError, match=r"s: DICOM series has images of different sizes .*odd\.dcm is 20x30"
    ):
        read_sagittal(tmp_path / "s")


def test_dicom_series_with_duplicate_positions(tmp_path):
    paths = write_series(tmp_path / "s", P, I)
    copy = pydicom.dcmread(paths[3])
    copy.SOPInstanceUID = generate_uid()
    copy.save_as(tmp_path / "s" / "dup.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="same slice position"):
        read_sagittal(tmp_path / "s")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM images in this folder"):
        read_sagittal(tmp_path)


def test_single_sagittal_dicom_is_turned_to_display(tmp_path):
    rows, cols, n, ipp, points = plane_geometry(A, S, (1.0, 1.0), 4.0)  # mirrored, upside down
    ds = dicom_slice(
        phantom(points(n // 2)),
        iop=(*A, *S),
        ipp=ipp(n // 2),
        spacing=(1.0, 1.0),
        series_uid="1.2.3",
        number=1,
    )
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    out = read_sagittal(tmp_path / "one.dcm")
    assert out.slice_index is None and out.n_slices is None and out.orientation is None
    assert out.modality == "MR" and out.pixel_spacing_mm == (1.0, 1.0)
    assert_display(out.pixels)
    stack = read_sagittal_stack(tmp_path / "one.dcm", n=3)
    assert len(stack) == 3 and all("repeated to make 3" in w for s in stack for w in s.warnings[-1:])


def test_single_transposed_sagittal_dicom(tmp_path):
    rows, cols, n, ipp, points = plane_geometry(S, A, (2.0, 1.0), 4.0)  # rows run anterior
    ds = dicom_slice(
        phantom(points(n // 2)),
        iop=(*S, *A),
        ipp=ipp(n // 2),
        spacing=(2.0, 1.0),
        series_uid="1.2.3",
        number=1,
    )
    ds.save_as(tmp_path / "t.dcm", enforce_file_format=True)
    out = read_sagittal(tmp_path / "t.dcm")
    assert out.pixel_spacing_mm == (1.0, 2.0)
    assert_display(out.pixels)


def test_single_axial_dicom_is_returned_as_stored(tmp_path):
    ds = dicom_slice(
        np.arange(20 * 30).reshape(20, 30),
        iop=(*L, *P),
        ipp=(0, 0, 0),
        spacing=(1.0, 1.0),
        series_uid="1",
        number=1,
    )
    ds.save_as(tmp_path / "ax.dcm", enforce_file_format=True)
    out = read_sagittal(tmp_path / "ax.dcm")
    assert out.pixels.shape == (20, 30)
    assert out.warnings == ["single axial image, not a sagittal one; returned as stored"]


def test_enhanced_multiframe_dicom(tmp_path):
    rows, cols, n, ipp, points = plane_geometry(A, S, (1.0, 1.0), 4.0)
    frames = np.stack([phantom(points(k)) for k in range(n)]).astype(np.uint16)
    ds = dicom_slice(frames, iop=None, ipp=None, spacing=(1.0, 1.0), series_uid="1.2.3", number=1)
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedMRImageStorage
    ds.SOPClassUID = pydicom.uid.EnhancedMRImageStorage
    del ds.PixelSpacing
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [*A, *S]
    measures.PixelSpacing = [1.0, 1.0]
    measures.SliceThickness = 4.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in reversed(range(n)):  # frames stored in reverse order: positions decide
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [float(v) for v in ipp(k)]
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.set_pixel_data(frames[::-1].copy(), "MONOCHROME2", 12)
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    out = read_sagittal(tmp_path / "enhanced.dcm")
    assert out.n_slices == 11 and out.modality == "MR"
    assert out.pixel_spacing_mm == pytest.approx((1.0, 1.0))
    assert_display(out.pixels)
    assert out.warnings == []


def test_monochrome1_series_is_inverted(tmp_path):
    paths = write_series(tmp_path / "s", P, I)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(path, enforce_file_format=True)
    out = read_sagittal(tmp_path / "s")
    assert out.pixels[:5, :5].mean() < 0.05 and out.pixels[:, -10:].mean() > 0.95


def test_no_patient_identifiers_in_warnings(tmp_path):
    write_series(tmp_path / "s", L, P, geometry=False)
    write_series(tmp_path / "s", L, P, prefix="B", thickness=8.0)
    text = " ".join(read_sagittal(tmp_path / "s").warnings)
    assert text and PATIENT_NAME not in text and PATIENT_ID not in text


# --------------------------------------------------------------------------- 2-D images


def test_png_is_returned_as_stored(tmp_path):
    array = np.zeros((30, 20), dtype=np.uint8)
    array[:5, :5] = 255
    Image.fromarray(array).save(tmp_path / "a.png")
    out = read_sagittal(tmp_path / "a.png")
    assert out.pixels.shape == (30, 20) and out.pixels[0, 0] == 1.0 and out.pixels[-1, -1] == 0.0
    assert out.pixel_spacing_mm is None and out.slice_index is None and out.n_slices is None
    assert out.orientation is None and out.warnings == []
    stack = read_sagittal_stack(tmp_path / "a.png", n=2)
    assert len(stack) == 2 and stack[0].pixels is not stack[1].pixels
    assert "only 1 sagittal slice available (2-D image); repeated to make 2" in stack[0].warnings
    with pytest.raises(InputError, match=r"a\.png: slice 1 requested"):
        read_sagittal(tmp_path / "a.png", slice_index=1)


@pytest.mark.real_data
@pytest.mark.skipif(not SPIDER.is_dir(), reason="shared/data/spider-sagittal not present")
def test_real_spider_png():
    path = sorted((SPIDER / "images").glob("*.png"))[0]
    out = read_sagittal(path)
    assert out.pixels.ndim == 2 and out.pixels.dtype == np.float32
    assert out.pixels.min() >= 0.0 and out.pixels.max() <= 1.0 and out.pixels.std() > 0.01
    assert out.path == path and out.slice_index is None
