"""Herniation from the posterior disc margin: does a network trained on that crop beat the canal fusion?

    python research/herniation_posterior.py --work runs/herniation_posterior

The bundled grader's herniation head (whole-disc crop) scores 0.75 out of fold, below the canal
stenosis model (posterior-margin crop, trained on lumbar515 stenosis, never on herniation) at 0.82.
This asks whether a posterior-margin network *trained on SPIDER herniation* does better, alone and
stacked with the grader and canal logits. Protocol:

* Discs and folds are those of the grader's cross-validation (``runs/spider_discs/grader_cv``:
  the development patients of research/results/split.json, report patients never read); each fold's
  network trains on the other folds' SPIDER discs only, for a fixed 10 epochs.
* Variants: ``imagenet`` (Lite0, ImageNet init, as the canal model) and ``from_canal`` (initialised
  from the canal model trained on lumbar515, ``runs/canal_stenosis_split/canal_stenosis.pt``).
* Stacks (LogitStack on raw logits) are cross-fitted over the same folds. 95% CIs: bootstrap over
  patients (1,000 resamples).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from spinedx.evaluation.grading import binary_task_metrics
from spinedx.io.images import read_image
from spinedx.models.calibration import LogitStack
from spinedx.models.model_file import read_model_file
from spinedx.tasks.canal_stenosis.config import CanalStenosisRecipe
from spinedx.tasks.canal_stenosis.model import FORMAT as CANAL_FORMAT
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.canal_stenosis.network import level_index, posterior_crops
from spinedx.tasks.canal_stenosis.train import _fit, _predict
from spinedx.tasks.disc_grading.train import OOF_PREDICTIONS, load_grading_data
from spinedx.tasks.mri_discs.config import parse_recipe

log = logging.getLogger("herniation_posterior")


def spider_rows(cv_dir: Path) -> pd.DataFrame:
    """The SPIDER rows of the grader CV's out-of-fold table, with their boxes and image paths."""
    recipe = parse_recipe(
        yaml.safe_load(Path("configs/spider_discs.yaml").read_text()), "configs/spider_discs.yaml"
    )
    table = load_grading_data(recipe.grader, cache_dir=cv_dir, with_crops=False).table
    oof = pd.read_csv(cv_dir / OOF_PREDICTIONS, dtype={"image_id": str, "patient": str})
    assert len(table) == len(oof) and (table["image_id"].astype(str).to_numpy() == oof["image_id"]).all()
    for column in ("xmin", "ymin", "xmax", "ymax", "image_path"):
        oof[column] = table[column].to_numpy()
    return oof[oof["herniation"].notna()].reset_index(drop=True)


def crops_of(rows: pd.DataFrame, size: int, scale: float) -> np.ndarray:
    crops = np.zeros((len(rows), size, size), dtype=np.float32)
    for image_path, group in rows.groupby("image_path", sort=False):
        pixels = read_image(image_path).pixels
        crops[group.index] = posterior_crops(
            pixels, group[["xmin", "ymin", "xmax", "ymax"]].to_numpy(), size, scale
        )
    return crops


def _cell(metrics: dict, key: str) -> str:
    value = metrics[key]
    return f"{value['estimate']:.3f} ({value['lower']:.3f}–{value['upper']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cv-dir", type=Path, default=Path("runs/spider_discs/grader_cv"))
    parser.add_argument("--canal", type=Path, default=Path("runs/canal_stenosis_split/canal_stenosis.pt"))
    parser.add_argument("--work", type=Path, default=Path("runs/herniation_posterior"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = spider_rows(args.cv_dir)
    recipe = CanalStenosisRecipe(data_root=Path("."), epochs=args.epochs, threads=args.threads)
    crops = crops_of(rows, recipe.crop_size, recipe.crop_scale)
    levels = level_index(rows["ivd_label"].tolist())
    labels = rows["herniation"].to_numpy().astype(np.int64)
    folds = rows["fold"].to_numpy()
    canal = CanalStenosis.load(args.canal)
    rows["canal_logit"] = (
        canal.model(torch.from_numpy(crops)[:, None], torch.from_numpy(levels)).detach().numpy()
    )
    canal_state = read_model_file(args.canal, CANAL_FORMAT, "a canal stenosis classifier")["state_dict"]
    canal_backbone = args.work / "canal_backbone.pt"
    torch.save({k.removeprefix("backbone."): v for k, v in canal_state.items() if k.startswith("backbone.")},
               canal_backbone)  # fmt: skip
    for variant in ("imagenet", "from_canal"):
        column = f"{variant}_logit"
        cache = args.work / f"{variant}.npy"
        if cache.is_file():
            rows[column] = np.load(cache)
            continue
        logits = np.zeros(len(rows))
        for fold in np.unique(folds):
            train = folds != fold
            pretrained = "imagenet" if variant == "imagenet" else str(canal_backbone)
            settings = recipe.model_copy(update={"pretrained": pretrained})
            model = _fit(settings, crops[train], levels[train], labels[train], args.work / variant / f"fold_{fold}",
                         {"variant": variant, "fold": int(fold)}, f"{variant} fold {fold}")  # fmt: skip
            logits[~train] = _predict(model, crops[~train], levels[~train])
            log.info("%s fold %d done", variant, fold)
        np.save(cache, logits)
        rows[column] = logits
    groups = rows["patient"].to_numpy()

    def cross_fitted(columns: list[str]) -> np.ndarray:
        features = rows[columns].to_numpy()
        out = np.zeros(len(rows))
        for fold in np.unique(folds):
            held_out = folds == fold
            out[held_out] = LogitStack.fit(features[~held_out], labels[~held_out]).apply(features[held_out])
        return out

    candidates = {
        "level prior": rows["herniation_baseline"].to_numpy(),
        "grader (bundled design)": rows["herniation_logit"].to_numpy(),
        "canal model (stenosis-trained)": rows["canal_logit"].to_numpy(),
        "posterior, ImageNet init": rows["imagenet_logit"].to_numpy(),
        "posterior, from canal model": rows["from_canal_logit"].to_numpy(),
        "stack grader + canal (bundled)": cross_fitted(["herniation_logit", "canal_logit"]),
        "stack grader + posterior ImageNet": cross_fitted(["herniation_logit", "imagenet_logit"]),
        "stack grader + posterior from canal": cross_fitted(["herniation_logit", "from_canal_logit"]),
        "stack grader + canal + posterior from canal": cross_fitted(
            ["herniation_logit", "canal_logit", "from_canal_logit"]
        ),
    }
    results = {}
    lines = [
        "| herniation, SPIDER out of fold | AUROC | sens @ spec 0.88 | AP |",
        "| --- | --- | --- | --- |",
    ]
    for name, scores in candidates.items():
        results[name] = binary_task_metrics(labels, scores, threshold=0.5, groups=groups)
        cells = [
            _cell(results[name], key)
            for key in ("auroc", "sensitivity_at_specificity_0.88", "average_precision")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    table = "\n".join(lines)
    print(table)
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    (args.work / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
