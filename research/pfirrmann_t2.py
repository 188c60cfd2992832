"""Pfirrmann from T2 labels only: does fine-tuning on T2 Pfirrmann grades raise agreement on T2 series?

    python research/pfirrmann_t2.py --work runs/pfirrmann_t2

Pfirrmann grades are defined on T2-weighted images, yet the bundled grader learns them from T1 series
as well (out of fold, one series: T2 κ 0.72 / 0.64, T1 0.60 / 0.55 on SPIDER / lumbar515), and a study
now reads its Pfirrmann from its T2 series. Protocol, inner folds only:

* The grader CV's folds and fold models (``runs/spider_discs/grader_cv``; report patients never read).
* Each fold model is fine-tuned for ``--epochs`` on its own training folds, with the recipe's settings
  at a third of its learning rates, in two arms that differ in one thing only: ``all`` keeps every
  Pfirrmann label, ``t2_only`` masks the Pfirrmann labels of T1 series (the other grades keep theirs).
  The ``all`` arm separates the effect of more training from that of the T2 labels.
* Scored on the held-out fold: quadratic κ of the argmax grade on T2 and on T1 series per cohort, with
  the fold model before fine-tuning beside them. 95% CIs: bootstrap over patients.
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

from spinedx.evaluation.grading import ordinal_metrics
from spinedx.tasks.disc_grading.model import DiscGrader, predict_logits
from spinedx.tasks.disc_grading.network import pfirrmann_probabilities
from spinedx.tasks.disc_grading.train import OOF_PREDICTIONS, fit_grader, load_grading_data
from spinedx.tasks.mri_discs.config import parse_recipe

log = logging.getLogger("pfirrmann_t2")


def grades_of(model, crops: np.ndarray, table: pd.DataFrame, config) -> np.ndarray:
    logits = predict_logits(model, crops, table["ivd_label"].to_numpy(), config.crop_size,
                            pfirrmann_head=config.pfirrmann_head)  # fmt: skip
    probabilities = pfirrmann_probabilities(
        torch.as_tensor(logits["pfirrmann"]), config.pfirrmann_head
    ).numpy()
    return probabilities.argmax(1) + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cv-dir", type=Path, default=Path("runs/spider_discs/grader_cv"))
    parser.add_argument("--work", type=Path, default=Path("runs/pfirrmann_t2"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    source = Path("configs/spider_discs.yaml")
    recipe = parse_recipe(yaml.safe_load(source.read_text()), str(source))
    data = load_grading_data(recipe.grader, cache_dir=args.cv_dir)
    table = data.table
    oof = pd.read_csv(args.cv_dir / OOF_PREDICTIONS, dtype={"image_id": str, "patient": str})
    assert len(oof) == len(table) and (oof["image_id"].to_numpy() == table["image_id"].astype(str)).all()
    folds = oof["fold"].to_numpy()
    t1 = table["sequence"].astype(str).str.lower().eq("t1").to_numpy()
    cache = args.work / "grades.csv"
    if cache.is_file():
        predicted = pd.read_csv(cache)
    else:
        predicted = pd.DataFrame(index=table.index, columns=["before", "all", "t2_only"], dtype=float)
        for fold in np.unique(folds):
            train, test = folds != fold, folds == fold
            init = args.cv_dir / f"fold_{fold}" / "disc_grader.pt"
            predicted.loc[test, "before"] = grades_of(DiscGrader.load(init).eager_network(), data.crops[test],
                                                      table[test], recipe.grader)  # fmt: skip
            for arm in ("all", "t2_only"):
                labels = table.copy()
                if arm == "t2_only":
                    labels.loc[t1, "pfirrmann"] = np.nan
                config = recipe.grader.model_copy(update={
                    "init": str(init), "epochs": args.epochs, "warmup_epochs": 0.0,
                    "lr": recipe.grader.lr / 3, "backbone_lr": recipe.grader.backbone_lr / 3,
                })  # fmt: skip
                model, _ = fit_grader(config, data.crops[train], labels[train].reset_index(drop=True),
                                      args.work / arm / f"fold_{fold}", seed=int(fold), log_prefix=f"{arm} fold {fold}: ")  # fmt: skip
                predicted.loc[test, arm] = grades_of(model, data.crops[test], table[test], recipe.grader)
        args.work.mkdir(parents=True, exist_ok=True)
        predicted.to_csv(cache, index=False)
    results = {}
    lines = [
        "| Pfirrmann κ, out of fold | " + " | ".join(["before", "all", "t2_only"]) + " |",
        "| --- | --- | --- | --- |",
    ]
    cohort = oof["cohort"].to_numpy()
    for name in ("spider", "lumbar515"):
        for series, mask in (("T2", ~t1), ("T1", t1)):
            rows = (cohort == name) & mask & table["pfirrmann"].notna().to_numpy()
            truth = table.loc[rows, "pfirrmann"].astype(int).to_numpy()
            groups = table.loc[rows, "patient"].astype(str).to_numpy()
            cells = []
            for arm in ("before", "all", "t2_only"):
                kappa = ordinal_metrics(truth, predicted.loc[rows, arm].astype(int).to_numpy(), labels=[1, 2, 3, 4, 5],
                                        groups=groups)["kappa_quadratic"]  # fmt: skip
                results[f"{name} {series} {arm}"] = kappa
                cells.append(f"{kappa['estimate']:.3f} ({kappa['lower']:.3f}–{kappa['upper']:.3f})")
            lines.append(f"| {name} {series} series ({rows.sum()} discs) | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    (args.work / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
