"""From an annotation CSV and a recipe to labelled, split ROI crops: the data side of training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.data.crops import CropSet, extract_crops
from spinedx.data.labels import LabelMap
from spinedx.data.splits import SPLITS, grouped_split
from spinedx.errors import InputError
from spinedx.io.annotations import boxed_rows
from spinedx.io.vindr import read_vindr_csv
from spinedx.tasks.xray_lesions.config import DataConfig


@dataclass
class RoiData:
    crops: np.ndarray  # (N, S, S) uint8
    rows: pd.DataFrame  # annotation rows + label, class_name, split
    class_names: list[str]
    skipped: list[str]  # unreadable / missing images, one line each
    clipped: list[str] = field(default_factory=list)  # boxes reaching outside their image, one line each

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        mask = (self.rows["split"] == split).to_numpy()
        return self.crops[mask], self.rows.loc[mask, "label"].to_numpy()

    def counts(self) -> dict[str, dict[str, int]]:
        """Crops per class per split, for reports."""
        table = self.rows.groupby(["split", "class_name"]).size()
        return {
            split: {name: int(table.get((split, name), 0)) for name in self.class_names}
            for split in SPLITS
            if split in set(self.rows["split"])
        }


def load_labelled_crops(config: DataConfig, csv: Path | None = None, images: Path | None = None) -> CropSet:
    """Read annotations, keep rows the label map covers, and crop them."""
    csv, images = Path(csv or config.csv), Path(images or config.images)
    label_map = LabelMap(config.labels)
    rows = label_map.apply(boxed_rows(read_vindr_csv(csv)))
    if rows.empty:
        raise InputError(f"{csv}: no boxed rows whose lesion_type the label map data.labels covers")
    crop_set = extract_crops(rows, images, config.crop.size, config.crop.margin)
    if len(crop_set.crops) == 0:
        raise InputError(f"{images}: none of the images referenced by {csv} could be read")
    return crop_set


def prepare_training_data(config: DataConfig) -> RoiData:
    """Crops with a grouped, stratified train/val/test split; checks the training set is learnable."""
    class_names = LabelMap(config.labels).class_names
    crop_set = load_labelled_crops(config)
    rows = crop_set.rows
    present = sorted(set(rows["class_name"]))
    if len(present) < 2:
        raise InputError(
            f"{config.csv}: only one class ({present[0]!r}) after label mapping; a classifier needs two or more"
        )
    split_config = config.split
    rows["split"] = grouped_split(
        rows,
        test_fraction=split_config.test_fraction,
        val_fraction=split_config.val_fraction,
        seed=split_config.seed,
        group_by=split_config.group_by,
    ).to_numpy()
    return RoiData(crop_set.crops, rows, class_names, crop_set.skipped, crop_set.warnings)


def restrict_to_studies(
    crop_set: CropSet,
    class_names: list[str],
    study_split: pd.DataFrame,
    split: str,
    group_by: str = "study_id",
) -> RoiData:
    """The crops whose study a saved split table assigns to ``split`` (evaluation of a finished run)."""
    chosen = set(study_split.loc[study_split["split"] == split, "group"].astype(str))
    mask = crop_set.rows[group_by].astype(str).isin(chosen).to_numpy()
    rows = crop_set.rows.loc[mask].reset_index(drop=True)
    rows["split"] = split
    return RoiData(crop_set.crops[mask], rows, class_names, crop_set.skipped, crop_set.warnings)
