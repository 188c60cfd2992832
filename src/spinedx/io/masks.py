"""Segmentation masks of sagittal spine MRI: import from the real datasets' formats, export.

spinedx's label map (:data:`SEG_LABELS`) is a 2-D ``uint8`` array in the pixel space of its image:
0 background, 1 vertebra (vertebral body or sacrum), 2 disc, 3 spinal canal — the order of
``spinedx synth mri``'s masks. :data:`IGNORE` (255) marks pixels that carry no supervision.

Importers (each raises :class:`~spinedx.errors.InputError` naming the file and what is wrong):

- :func:`read_index_mask`: greyscale masks whose values name classes (``mapping`` value → class),
  e.g. mri-seg-small (0 background, 1 disc, 2 vertebra) or synth masks with ``labels.json``.
- :func:`read_colour_mask`: colour-coded instance masks (one colour per vertebra, black background),
  e.g. spider-vertebra-masks. Colours are matched to the nearest palette entry within a tolerance,
  so lossy-compression noise is absorbed; a colour far from every entry is an error.
- :func:`vertebral_bodies`: keeps each vertebra's largest connected piece (the body: the convention
  of synth masks and mri-seg-small) and marks its other pieces (posterior elements) :data:`IGNORE`.

Exporters: :func:`write_label_png`, :func:`write_label_nifti` (SimpleITK, spacing kept) and
:func:`write_label_table` (``labels.json``, class value → name).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_path, atomic_write_text
from spinedx.io.limits import check_image_size

SEG_LABELS: dict[int, str] = {0: "background", 1: "vertebra", 2: "disc", 3: "spinal_canal"}
BACKGROUND, VERTEBRA, DISC, CANAL = 0, 1, 2, 3
IGNORE = 255
LABELS_FILE = "labels.json"
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs analysis writes: about 4x faster to encode than Pillow's default (6) for
files about 20% larger, the same pixels."""

MRI_SEG_SMALL_MAPPING: dict[int, int] = {0: BACKGROUND, 1: DISC, 2: VERTEBRA}
"""mri-seg-small's mask values → spinedx classes."""

SPIDER_VERTEBRA_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (128, 128, 128),
    (255, 255, 255),
    (255, 128, 0),
)
"""Vertebra colours of spider-vertebra-masks (black is background)."""

COLOUR_TOLERANCE = 48
"""Largest per-channel distance from a palette colour that still counts as that colour."""


def _open(path: Path) -> Image.Image:
    """The decoded mask; its size is checked against the pixel budget from the header first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # spinedx's budget applies
            image = Image.open(path)
        check_image_size(path, *image.size)
        image.load()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: mask file not found") from exc
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc
    return image


def _check_shape(path: Path, array: np.ndarray, shape: tuple[int, int] | None) -> None:
    if shape is not None and tuple(array.shape[:2]) != tuple(shape):
        raise InputError(
            f"{path}: mask size {array.shape[1]}x{array.shape[0]} does not match its image "
            f"{shape[1]}x{shape[0]} (width x height)"
        )


def read_index_mask(
    path: str | Path, mapping: dict[int, int], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Greyscale mask → spinedx label map; every pixel value must be a key of ``mapping``."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise InputError(f"{path}: mask mode {image.mode}: expected a single-channel index mask")
    values = np.asarray(image)
    _check_shape(path, values, shape)
    present = np.unique(values)
    unknown = [int(v) for v in present if int(v) not in mapping]
    if unknown:
        raise InputError(
            f"{path}: pixel value(s) {unknown[:5]} are not in the label table (known: {sorted(mapping)})"
        )
    lookup = np.zeros(int(present.max()) + 1, dtype=np.uint8)
    for value, label in mapping.items():
        if value < lookup.size:
            lookup[value] = label
    return lookup[values]


def read_colour_mask(
    path: str | Path,
    palette: tuple[tuple[int, int, int], ...] = SPIDER_VERTEBRA_PALETTE,
    shape: tuple[int, int] | None = None,
    tolerance: int = COLOUR_TOLERANCE,
) -> np.ndarray:
    """Colour-coded instance mask → instance map (0 background, k = k-th palette colour, 1-based)."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("RGB", "RGBA", "P"):
        raise InputError(f"{path}: mask mode {image.mode}: expected a colour (RGB) mask")
    rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    _check_shape(path, rgb, shape)
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    references = np.array([(0, 0, 0), *palette], dtype=np.int16)
    distance = np.abs(colours[:, None, :] - references[None, :, :]).max(axis=2)
    nearest = distance.argmin(axis=1)
    far = distance[np.arange(len(colours)), nearest] > tolerance
    if far.any():
        shown = ", ".join(str(tuple(int(c) for c in colour)) for colour in colours[far][:3])
        raise InputError(
            f"{path}: colour(s) {shown} are not background or a known vertebra colour "
            f"(tolerance {tolerance} per channel)"
        )
    return nearest[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)


def vertebral_bodies(instances: np.ndarray) -> np.ndarray:
    """Instance map → label map: each instance's largest connected piece is :data:`VERTEBRA`,
    its smaller pieces (posterior elements, cut by the canal on mid-sagittal slices) :data:`IGNORE`."""
    labels = np.zeros(instances.shape, dtype=np.uint8)
    for instance in np.unique(instances):
        if instance == 0:
            continue
        pieces, n = ndimage.label(instances == instance)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        largest = int(np.argmax(sizes)) + 1
        labels[pieces == largest] = VERTEBRA
        labels[(pieces > 0) & (pieces != largest)] = IGNORE
    return labels


def read_label_table(path: str | Path) -> dict[int, int]:
    """``labels.json`` (value → class name) → mapping of values to spinedx classes, by name."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: label table not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg})") from exc
    by_name = {name: value for value, name in SEG_LABELS.items()}
    mapping = {}
    for value, name in table.items():
        if name not in by_name:
            raise InputError(f"{path}: class '{name}' is not one of {list(by_name)}")
        try:
            mapping[int(value)] = by_name[name]
        except ValueError as exc:
            raise InputError(f"{path}: key '{value}' is not an integer mask value") from exc
    return mapping


def write_label_table(path: str | Path) -> Path:
    table = {str(value): name for value, name in SEG_LABELS.items()}
    return atomic_write_text(path, json.dumps(table, indent=2) + "\n")


def write_label_png(path: str | Path, labels: np.ndarray) -> Path:
    """8-bit greyscale PNG whose pixel values are the classes of :data:`SEG_LABELS`."""
    with atomic_path(path) as temporary:
        Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").save(
            temporary, format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
    return Path(path)


def write_label_nifti(
    path: str | Path, labels: np.ndarray, pixel_spacing_mm: tuple[float, float] | None
) -> Path:
    """NIfTI label image (uint8, one slice) with the (row, col) spacing in mm, 1 mm when unknown.

    The slice is laid out as analysed (cranial up, anterior left): NIfTI x runs along image columns,
    y along rows.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8)[None])
    row_mm, col_mm = pixel_spacing_mm or (1.0, 1.0)
    image.SetSpacing((float(col_mm), float(row_mm), 1.0))
    with atomic_path(path) as temporary:
        # SimpleITK picks the format from the name, which atomic_path's temporary name hides.
        staging = temporary.with_name(temporary.name + ".nii.gz")
        try:
            sitk.WriteImage(image, str(staging), useCompression=True)
            staging.replace(temporary)
        finally:
            staging.unlink(missing_ok=True)
    return Path(path)
