"""Make the pictures of docs/how-to/orthanc.md from a real round trip through Orthanc.

A throwaway Orthanc (tests/orthanc_server.py, the configuration the how-to shows) receives a
synthetic MR series; ``spinedx pacs watch --once`` analyses it and stores SR, SEG and SC back
with STOW-RS; then everything drawn is read back out of Orthanc over DICOMweb:

- ``orthanc-seg-sr.png``: the SEG's segments over the source slice it references, with the SR's
  disc regions (planar ROIs) and levels, next to the SR content of one disc as ``dsrdump`` prints it;
- ``orthanc-explorer.png``: Orthanc Explorer's page of the study (headless Chromium), listing the
  MR series and the three result series.

Run from the repository root: ``.venv/bin/python docs/img/orthanc-pictures.py`` (needs orthanc,
orthanc-dicomweb, dcmtk and chromium).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import highdicom as hd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from orthanc_server import orthanc_server  # noqa: E402
from spinedx import api  # noqa: E402
from spinedx.synth.mri import generate_mri_dataset  # noqa: E402

OUT = REPO / "docs" / "img"
SEGMENT_COLOURS = {1: (0.95, 0.75, 0.2), 2: (0.2, 0.8, 0.9), 3: (0.9, 0.3, 0.6)}


def synthetic_series(folder: Path) -> list[Dataset]:
    generate_mri_dataset(folder, n_patients=1, seed=3, sequences=("t2",))
    pixels = np.asarray(Image.open(folder / "images" / "1_t2.png"), dtype=np.uint16) * 16
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(3):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Synthetic^Patient",
            "SYNTH-1",
            "",
            "O",
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261203", "101010", "1", "SYNTH"
        ds.StudyDescription, ds.SeriesDescription = "Lumbar spine MR (synthetic)", "T2 sagittal"
        ds.ReferringPhysicianName, ds.Manufacturer, ds.Modality = "", "Synthetic", "MR"
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, k + 1, ""
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.ImagePositionPatient = [4.0 * (k - 1), 0.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.9], 4.0
        ds.set_pixel_data(pixels, "MONOCHROME2", 12)
        datasets.append(ds)
    return datasets


def upload(url: str, datasets: list[Dataset]) -> str:
    for ds in datasets:
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        answer = requests.post(f"{url}/instances", data=buffer.getvalue(), timeout=10)
        answer.raise_for_status()
    return answer.json()["ParentStudy"]


def wait_stable(url: str, study_id: str) -> None:
    import time

    while not requests.get(f"{url}/studies/{study_id}", timeout=5).json()["IsStable"]:
        time.sleep(0.2)


def read_back(url: str, study_uid: str) -> dict[str, list[Dataset]]:
    """Every instance of the study, over WADO-RS, by Modality."""
    client = DICOMwebClient(url=f"{url}/dicom-web")
    found: dict[str, list[Dataset]] = {}
    for series in client.search_for_series(study_instance_uid=study_uid):
        modality = series["00080060"]["Value"][0]
        found.setdefault(modality, []).extend(
            client.retrieve_series(study_uid, series["0020000E"]["Value"][0])
        )
    return found


def seg_and_sr_picture(objects: dict[str, list[Dataset]], work: Path) -> None:
    seg = hd.seg.Segmentation.from_dataset(objects["SEG"][0])
    source_uid = seg.get_source_image_uids()[0][2]
    source = next(ds for ds in objects["MR"] if ds.SOPInstanceUID == source_uid)
    labels = seg.get_pixels_by_source_instance([source_uid], combine_segments=True)[0]
    sr_path = work / "sr.dcm"
    objects["SR"][0].save_as(sr_path, enforce_file_format=True)
    sr = hd.sr.srread(sr_path)
    dump = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True, check=True).stdout

    figure, (image_axes, text_axes) = plt.subplots(1, 2, figsize=(15, 7.5), width_ratios=(1, 1.25))
    image_axes.imshow(source.pixel_array, cmap="gray")
    colours = np.zeros((*labels.shape, 4))
    for number, colour in SEGMENT_COLOURS.items():
        colours[labels == number] = (*colour, 0.35)
    image_axes.imshow(colours)
    for group in sr.content.get_planar_roi_measurement_groups():
        corners = np.asarray(group.roi.value)
        image_axes.plot(corners[:, 0], corners[:, 1], color="lime", linewidth=1)
        image_axes.text(corners[:, 0].max() + 4, corners[:, 1].mean(), group.tracking_identifier.removeprefix("disc "),
                        color="lime", fontsize=8, va="center")  # fmt: skip
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=SEGMENT_COLOURS[item.SegmentNumber]) for item in seg.SegmentSequence
    ]
    image_axes.legend(handles, [f"SEG: {item.SegmentLabel}" for item in seg.SegmentSequence] , loc="lower left",
                      fontsize=8)  # fmt: skip
    image_axes.set_title("SEG over its source slice, SR disc regions (read back from Orthanc)", fontsize=10)
    image_axes.axis("off")

    # The content of one disc (L4/L5) as dsrdump prints it, trimmed to fit.
    lines = dump.splitlines()
    start = next(i for i, line in enumerate(lines) if '"disc L4/L5"' in line) - 2
    end = next(i for i in range(start + 3, len(lines)) if '"Measurement Group"' in lines[i]) - 1
    excerpt = [textwrap.shorten(line, 100, placeholder="…") for line in lines[start:end]]
    text_axes.text(0, 1, "\n".join(excerpt), family="monospace", fontsize=8, va="top")
    text_axes.set_title("SR (TID 1500), one measurement group: dsrdump sr.dcm", fontsize=10)
    text_axes.axis("off")
    figure.tight_layout()
    figure.savefig(OUT / "orthanc-seg-sr.png", dpi=100)


def shrink(path: Path) -> None:
    """A 256-colour palette keeps the committed screenshot small (the figure keeps its true colours)."""
    with Image.open(path) as picture:
        picture.convert("RGB").quantize(colors=256).save(path, optimize=True)


def explorer_screenshot(url: str, study_id: str) -> None:
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,700",
         "--virtual-time-budget=5000", f"--screenshot={OUT / 'orthanc-explorer.png'}",
         f"{url}/app/explorer.html#study?uuid={study_id}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    shrink(OUT / "orthanc-explorer.png")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, orthanc_server() as server:
        work = Path(scratch)
        series = synthetic_series(work / "synth")
        study_id = upload(server.url, series)
        wait_stable(server.url, study_id)
        for outcome in api.pacs_watch(server.url, data_dir=work / "data", once=True):
            print(f"{outcome.orthanc_id}: {outcome.status}: {outcome.detail}")
        wait_stable(server.url, study_id)
        seg_and_sr_picture(read_back(server.url, series[0].StudyInstanceUID), work)
        explorer_screenshot(server.url, study_id)
    print(f"wrote {OUT / 'orthanc-seg-sr.png'} and {OUT / 'orthanc-explorer.png'}")


if __name__ == "__main__":
    main()
