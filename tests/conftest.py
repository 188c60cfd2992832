"""Shared fixtures: a tiny synthetic radiograph dataset, generated once per test session."""

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
