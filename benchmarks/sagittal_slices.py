"""Benchmark input shared by the MRI latency scripts: sagittal slices resized to a fixed square."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from spinedx.synth.mri import generate_mri_dataset


def sagittal_slices(data: Path | None, n: int, size: int) -> list[np.ndarray]:
    """``n`` slices of ``data/images`` (or synthetic ones when absent), ``size``×``size``, in [0, 1]."""
    if data is None or not (data / "images").is_dir():
        data = generate_mri_dataset(
            Path(tempfile.mkdtemp()) / "mri", n_patients=(n + 1) // 2, image_size=(size, size)
        )
    paths = sorted((data / "images").glob("*.png"))[:n]
    return [
        np.asarray(Image.open(p).convert("L").resize((size, size)), dtype=np.float32) / 255.0 for p in paths
    ]
