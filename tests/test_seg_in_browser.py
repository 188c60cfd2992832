"""The DICOM SEG spinedx writes, drawn over its source by the review viewer in headless Chromium.

Viewers draw SEG objects flipped or shifted when they mishandle orientation (OHIF #3420, #3754).
A synthetic 3-slice MR series is stored transposed and mirrored (rows toward the front, columns
toward the head) and uploaded to the service; the DICOM writers of ``spinedx analyze --dicom``
turn the service's analysis of it into seg.dcm for its middle slice. highdicom reads the SEG back
in the source's stored pixel order; the test turns that into the displayed orientation from the
source's ImageOrientationPatient alone and hands it to the viewer as the study's mask, while the
real service shows the uploaded series (16-bit slices). The disc segment must land on each
detected disc and nothing may show at the image corners; the wheel scrolls to the other slices,
where the segmentation is not drawn.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import generate_uid

from dicom_factory import new_mr_instance
from viewer_server import (
    Screen,
    chromium_page,
    deepest_point,
    mask_colour,
    open_study,
    require_chromium,
    review_server,
)

# Rows of the stored image run toward the head, columns toward the front (LPS: -y is anterior).
STORED_ORIENTATION = (0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
# How spinedx displays a sagittal slice: along a row toward the back, down the rows toward the feet.
DISPLAY_ROW, DISPLAY_COLUMN = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
COLOUR_TOLERANCE = 30
CORNER = 6


def _to_display(stored: np.ndarray, orientation) -> np.ndarray:
    """``stored`` (rows along the orientation's column cosine) turned to the displayed orientation."""
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    if abs(row @ DISPLAY_ROW) < 0.5:  # rows and columns swap places
        stored, row, column = stored.T, column, row
    if row @ DISPLAY_ROW < 0:
        stored = stored[:, ::-1]
    if column @ DISPLAY_COLUMN < 0:
        stored = stored[::-1, :]
    return stored


def _mr_series(display: np.ndarray, folder: Path) -> None:
    """Three parallel MR slices stored in STORED_ORIENTATION, ``display`` in the middle (x = 0 mm)."""
    folder.mkdir()
    normal = np.cross(STORED_ORIENTATION[:3], STORED_ORIENTATION[3:])
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    for k in range(3):
        pixels = display if k == 1 else np.roll(display, 60 * (k - 1), axis=0)  # neighbours differ
        stored = pixels[::-1, ::-1].T
        assert np.array_equal(_to_display(stored, STORED_ORIENTATION), pixels)
        ds = new_mr_instance()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Seg^Browser",
            "SEG-1",
            "19700101",
            "M",
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame"], ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101010", "1", "ACC1"
        ds.ReferringPhysicianName, ds.Manufacturer, ds.Modality = "", "Synth", "MR"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = list(STORED_ORIENTATION)
        ds.ImagePositionPatient = list(np.array([0.0, 100.0, -150.0]) + (k - 1) * 4.0 * normal)
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.9], 4.0
        ds.set_pixel_data(stored.astype(np.uint16), "MONOCHROME2", 12)
        ds.save_as(folder / f"IM{k}.dcm", enforce_file_format=True)


def _zip(folder: Path) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, path.name)
    return archive.getvalue()


def _seg_in_display_orientation(seg_path: Path, source: Path) -> tuple[np.ndarray, dict[int, str]]:
    """The SEG's label map (segment numbers) of its one source image, turned to display orientation
    with that image's ImageOrientationPatient; and the segment labels by number."""
    seg = hd.seg.segread(seg_path)
    ((_, _, instance_uid),) = seg.get_source_image_uids()
    stored = seg.get_pixels_by_source_instance([instance_uid], combine_segments=True)[0]
    analysed = next(
        ds
        for ds in (pydicom.dcmread(path, stop_before_pixels=True) for path in source.iterdir())
        if ds.SOPInstanceUID == instance_uid
    )
    assert analysed.InstanceNumber == 2  # the middle slice
    labels = _to_display(stored, analysed.ImageOrientationPatient).astype(np.uint8)
    assert not np.array_equal(labels, stored)  # drawn as stored, the SEG would be wrong
    return labels, {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}


def test_seg_lands_on_the_discs_in_the_viewer(tmp_path):
    require_chromium()
    from spinedx.dicom import write_dicom_results
    from spinedx.synth.mri import generate_mri_dataset

    generate_mri_dataset(tmp_path / "synth", n_patients=1, seed=5, sequences=("t2",))
    display = np.asarray(Image.open(tmp_path / "synth" / "images" / "1_t2.png"), dtype=np.float64) * 16
    source = tmp_path / "series"
    _mr_series(display, source)
    data = tmp_path / "data"

    with review_server(data) as server, chromium_page(server.url) as page:
        with server.client() as client:
            study_id = client.post("/api/studies", files={"file": ("series.zip", _zip(source))}).json()["id"]
        server.wait_done(study_id)
        with server.client() as client:
            findings = client.get(f"/api/studies/{study_id}/findings").raise_for_status().json()
        # What `spinedx analyze --dicom` adds to an analysis, on (a copy of) the one the service made.
        (result,) = (data / "studies" / study_id / "result").iterdir()
        analysis = shutil.copytree(result, tmp_path / "analysis")
        write_dicom_results(analysis, source)
        labels, names = _seg_in_display_orientation(analysis / "seg.dcm", source)
        assert labels.shape == display.shape
        disc_label = next(number for number, name in names.items() if name == "disc")
        mask_png = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(labels)).save(mask_png, format="PNG")
        labels_json = json.dumps({"0": "background", **{str(n): name for n, name in names.items()}})

        # The viewer draws the SEG (decoded above) where it would draw the study's own mask.
        page.route(
            "**/files/masks.png",
            lambda route: route.fulfill(body=mask_png.getvalue(), content_type="image/png"),
        )
        page.route(
            "**/files/labels.json",
            lambda route: route.fulfill(body=labels_json, content_type="application/json"),
        )
        page.wait_for_selector(f"tr[data-study='{study_id}'][data-status=done]")
        open_study(page, study_id)

        height, width = display.shape
        screen = Screen(page, (width, height))
        disc_colour, alpha = mask_colour(page, "disc")
        page.keyboard.press("l")
        plain = screen.grab()
        page.keyboard.press("m")
        masked = screen.grab()

        points = [deepest_point(labels == disc_label, disc["box"]) for disc in findings["discs"]]
        assert sum(p is not None for p in points) >= len(points) // 2 > 0, "the SEG misses most discs"
        for x, y in filter(None, points):
            expected = screen.sample(plain, x, y) * (1 - alpha) + disc_colour * alpha
            assert np.abs(screen.sample(masked, x, y) - expected).max() < COLOUR_TOLERANCE, (x, y)
        for x, y in (
            (CORNER, CORNER),
            (width - CORNER, CORNER),
            (CORNER, height - CORNER),
            (width - CORNER, height - CORNER),
        ):
            assert np.abs(screen.sample(masked, x, y) - screen.sample(plain, x, y)).max() < 3, (x, y)

        # The series scrolls with the wheel; the SEG, like the findings, belongs to the analysed slice only.
        with server.client() as client:
            stack = client.get(f"/api/studies/{study_id}/slices").raise_for_status().json()
        assert (stack["count"], stack["analysed_index"]) == (3, 1)
        page.mouse.move(screen.box["x"] + screen.box["width"] / 2, screen.box["y"] + screen.box["height"] / 2)
        page.mouse.wheel(0, 120)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=slice-line]').dataset.index !== '1'"
        )
        assert page.get_attribute("[data-testid=overlay]", "data-visible") == ""
        assert np.abs(screen.grab() - plain).max(axis=2).mean() > 5  # a different slice is shown
        page.keyboard.press("Home")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=slice-line]').dataset.index === '1'"
        )
        assert page.get_attribute("[data-testid=overlay]", "data-visible") == "mask"
