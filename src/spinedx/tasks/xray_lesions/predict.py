"""Per-ROI class probabilities for images, from given boxes or the whole image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.io.annotations import boxed_rows
from spinedx.io.boxes import validate_rows
from spinedx.io.images import read_image
from spinedx.tasks.xray_lesions.model import TrainedClassifier


@dataclass
class Predictions:
    records: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Boxes clipped to their image (scored as clipped)."""


def predict_images(
    classifier: TrainedClassifier, images: list[Path], boxes: pd.DataFrame | None = None
) -> Predictions:
    """One record per ROI: the boxes of ``boxes`` whose image_id is the image's file stem, else the
    whole image. An unreadable image or a box that is degenerate or entirely outside its image is
    reported in ``errors`` (naming the CSV row) and the rest go on; boxes partly outside are clipped."""
    result = Predictions()
    boxed = boxed_rows(boxes) if boxes is not None else None
    source = boxes.attrs.get("source", "boxes CSV") if boxes is not None else None
    for path in images:
        path = Path(path)
        try:
            pixels = read_image(path).pixels
        except InputError as exc:
            result.errors.append(str(exc))
            continue
        height, width = pixels.shape
        if boxed is not None:
            rows = boxed[boxed["image_id"].astype(str) == path.stem]
            if rows.empty:
                result.errors.append(f"{path}: no boxes for image_id '{path.stem}' in the boxes CSV")
                continue
            checked = validate_rows(rows, width, height, lambda index: f"{source} row {index}")
            result.errors.extend(checked.errors)
            result.warnings.extend(checked.warnings)
            rows = checked.rows
            if rows.empty:
                continue
            regions = [((r.xmin, r.ymin, r.xmax, r.ymax), r.lesion_type, r.rad_id) for r in rows.itertuples()]
        else:
            regions = [((0.0, 0.0, float(width), float(height)), None, None)]
        crops = np.stack([classifier.crop(pixels, box) for box, _, _ in regions])
        probabilities = classifier.predict_crops(crops)
        for index, ((box, lesion_type, reader), probs) in enumerate(zip(regions, probabilities, strict=True)):
            record = {
                "image": str(path),
                "image_id": path.stem,
                "roi": index,
                "xmin": float(box[0]),
                "ymin": float(box[1]),
                "xmax": float(box[2]),
                "ymax": float(box[3]),
            }
            if lesion_type is not None:
                record["annotated_lesion_type"] = lesion_type
                record["rad_id"] = reader
            record["predicted_class"] = classifier.class_names[int(probs.argmax())]
            record.update(
                {
                    f"p_{name}": round(float(p), 6)
                    for name, p in zip(classifier.class_names, probs, strict=True)
                }
            )
            result.records.append(record)
    return result
