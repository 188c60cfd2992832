"""Size limits every reader applies from the header, before decoding: small files, bounded memory.

A 165 kB PNG can declare 12000 x 12000 pixels and a DICOM header any Rows x Columns x frames;
decoding such a file would take gigabytes. Every reader in :mod:`spinedx.io` therefore reads the
declared size first and refuses, with one line naming the file, an input beyond

* ``SPINEDX_MAX_PIXELS`` pixels per 2-D image or slice (default :data:`DEFAULT_MAX_PIXELS`),
* ``SPINEDX_MAX_VOXELS`` voxels per volume (default :data:`DEFAULT_MAX_VOXELS`).

Both environment variables take a positive whole number (``_`` separators allowed) and are read
on every check, so a test or a user can change them at run time.

It also holds the smallest geometry a spine analysis can use (:data:`MIN_SPINE_SIDE`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from spinedx.errors import InputError

DEFAULT_MAX_PIXELS = 64_000_000
"""64 MP: above any radiograph or MR slice (a 43 x 43 cm detector at 0.1 mm is 18.5 MP)."""
DEFAULT_MAX_VOXELS = 256_000_000
"""1 GB as float32: far above a lumbar MR volume (512 x 512 x 200 = 52 M voxels)."""
MAX_PIXELS_ENV = "SPINEDX_MAX_PIXELS"
MAX_VOXELS_ENV = "SPINEDX_MAX_VOXELS"
MIN_SPINE_SIDE = 32
"""Fewest rows and columns of a slice a spine can be found in (discs are several pixels tall)."""


def _budget(variable: str, default: int) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{variable}: '{text}' is not a positive whole number of pixels")
    return value


def max_pixels() -> int:
    """The pixel budget per 2-D image or slice (``SPINEDX_MAX_PIXELS`` or the default)."""
    return _budget(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_voxels() -> int:
    """The voxel budget per volume (``SPINEDX_MAX_VOXELS`` or the default)."""
    return _budget(MAX_VOXELS_ENV, DEFAULT_MAX_VOXELS)


def check_image_size(path: Path, width: int, height: int) -> None:
    """InputError naming ``path`` when a ``width`` x ``height`` image is beyond the pixel budget."""
    budget = max_pixels()
    if width * height > budget:
        raise InputError(
            f"{path}: image is {width}x{height} pixels ({_mega(width * height)}), more than the "
            f"{_mega(budget)} a slice may have; not decoded (raise {MAX_PIXELS_ENV} to allow it)"
        )


def check_volume_size(path: Path, size: Sequence[int]) -> None:
    """InputError naming ``path`` when a volume of ``size`` voxels (any axis order) is beyond the
    voxel budget, or one of its slices beyond the pixel budget."""
    size = [int(s) for s in size]
    budget = max_voxels()
    total = math.prod(size)
    shown = "x".join(map(str, size))
    if total > budget:
        raise InputError(
            f"{path}: volume is {shown} voxels ({_mega(total, 'voxels')}), more than the "
            f"{_mega(budget, 'voxels')} a volume may have; not decoded (raise {MAX_VOXELS_ENV} to allow it)"
        )
    largest_slice = max((math.prod(size) // s for s in size if s), default=0) if len(size) == 3 else total
    if largest_slice > max_pixels():
        raise InputError(
            f"{path}: volume is {shown} voxels; a slice of it has {_mega(largest_slice)}, more than the "
            f"{_mega(max_pixels())} a slice may have; not decoded (raise {MAX_PIXELS_ENV} to allow it)"
        )


def _mega(count: int, unit: str = "pixels") -> str:
    return f"{count:,} {unit}"
