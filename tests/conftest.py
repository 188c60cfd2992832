"""Shared fixtures: tiny synthetic radiograph and lumbar515-layout MRI datasets, generated once per test session."""

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPIDER = SHARED_DATA / "spider-sagittal"
# Recipe sections that leave their data paths out take them from here (tests that read them skip
# when the folder is absent).
os.environ.setdefault("SPINEDX_DATA", str(SHARED_DATA))


@pytest.fixture(scope="session")
def tiny_xray(tmp_path_factory) -> Path:
    """Folder with images/ and annotations.csv: 60 synthetic lateral radiographs at 256 px."""
    from spinedx.synth.xray import generate_xray_dataset

    out = tmp_path_factory.mktemp("synth-xray")
    generate_xray_dataset(out, n_images=60, seed=7, image_size=256)
    return out


def tiny_overrides(data_dir: Path, *extra: str) -> list[str]:
    """Recipe overrides that make any recipe train in seconds on ``tiny_xray``."""
    base = [
        f"data.csv={data_dir / 'annotations.csv'}",
        f"data.images={data_dir / 'images'}",
        "data.crop.size=64",
        "train.epochs=2",
        "train.batch_size=16",
        "train.threads=1",
    ]
    return [*base, *extra]


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="session")
def lumbar515_cohort(tmp_path_factory) -> Path:
    """Synthetic MRI in the lumbar515 layout: tight disc boxes (normal / ddd / lumbar_bulge), a stenosis
    box behind every bulging disc, Pfirrmann at L3/L4-L5/S1."""
    import pandas as pd

    from spinedx import api

    root = tmp_path_factory.mktemp("l515")
    synth = api.synth_mri(root / "synth", n_patients=6, seed=11, image_size=320)
    folder = root / "lumbar515"
    (folder / "images").mkdir(parents=True)
    series = pd.read_csv(synth / "series.csv")
    discs = pd.read_csv(synth / "discs.csv")
    rows, boxes, grades = [], [], {}
    for record in series.itertuples():
        image_id = f"{int(record.patient):04d}_{record.sequence}"
        (folder / "images" / f"{image_id}.png").write_bytes(
            (synth / "images" / f"{record.image_id}.png").read_bytes()
        )
        rows.append([image_id, record.patient, record.sequence, record.width, record.height])
        for disc in discs[discs["image_id"] == record.image_id].itertuples():
            label = "ddd" if disc.pfirrmann >= 4 else "lumbar_bulge" if disc.bulging else "normal"
            inset = (disc.ymax - disc.ymin) * 0.2  # tight around the disc, without the endplates
            boxes.append(
                [image_id, label, disc.xmin, disc.ymin + inset, disc.xmax, disc.ymax - inset, disc.level]
            )
            if disc.bulging:
                centre = (disc.ymin + disc.ymax) / 2
                boxes.append(
                    [image_id, "stenosis", disc.xmax - 8, centre - 10, disc.xmax + 8, centre + 10, ""]
                )
            if disc.level in ("L3/L4", "L4/L5", "L5/S1"):
                grades[(record.patient, disc.level)] = disc.pfirrmann
    _write(folder / "series.csv", ["image_id", "patient", "sequence", "width", "height"], rows)
    _write(folder / "boxes.csv", ["image_id", "label", "xmin", "ymin", "xmax", "ymax", "level"], boxes)
    _write(
        folder / "pfirrmann.csv",
        ["patient", "level", "pfirrmann"],
        [[p, lv, g] for (p, lv), g in grades.items()],
    )
    return folder
