"""Train an ROI classifier from a recipe: data -> split -> model -> epochs -> run directory.

A run directory holds everything needed to reproduce and use the model:
``config.yaml`` (resolved recipe), ``run_info.json`` (commit, versions, command), ``splits.csv``
(which study went to train/val/test), ``history.json``, ``last.pt`` (resume point) and ``best.pt``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from spinedx.data.datasets import CropDataset
from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.recipes import recipe_to_yaml
from spinedx.tasks.xray_lesions.augment import build_augmentation
from spinedx.tasks.xray_lesions.config import ExperimentConfig
from spinedx.tasks.xray_lesions.data import RoiData, prepare_training_data
from spinedx.tasks.xray_lesions.engine import ClassifierHooks, prepare_network
from spinedx.tasks.xray_lesions.model import BEST, build_model
from spinedx.training.checkpoints import LAST
from spinedx.training.distributed import DistContext, init_distributed, shutdown_distributed
from spinedx.training.loop import BestEpoch, EpochLoop, LoopResult
from spinedx.training.losses import balanced_class_weights, build_loss
from spinedx.training.run_info import run_info

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
SPLITS_FILE = "splits.csv"
SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainOutcome:
    run_dir: Path
    fit: LoopResult
    data: RoiData


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def _study_splits(data: RoiData, group_by: str) -> pd.DataFrame:
    table = data.rows[[group_by, "split"]].drop_duplicates().rename(columns={group_by: "group"})
    return table.sort_values(["split", "group"]).reset_index(drop=True)


def train_experiment(config: ExperimentConfig, run_dir: Path) -> TrainOutcome:
    """Train (or resume) the recipe into ``run_dir``. Under torchrun each process calls this."""
    dist = init_distributed()
    try:
        return _train(config, Path(run_dir), dist)
    finally:
        shutdown_distributed(dist)


def _train(config: ExperimentConfig, run_dir: Path, dist: DistContext) -> TrainOutcome:
    train_config = config.train
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    seed_everything(config.seed, train_config.deterministic)
    config_yaml = recipe_to_yaml(config)
    data = prepare_training_data(config.data)
    train_crops, train_labels = data.part("train")
    if len(np.unique(train_labels)) < 2:
        raise InputError(
            f"{config.data.csv}: the training split holds a single class; add data or change data.split"
        )
    val_crops, val_labels = data.part("val")

    run_dir.mkdir(parents=True, exist_ok=True)
    # A run folder with a checkpoint resumes (EpochLoop refuses one of another recipe or other data).
    resuming = (run_dir / LAST).is_file()
    splits = _study_splits(data, config.data.split.group_by)
    if dist.is_main:
        for line in data.skipped:
            print(f"warning: skipped {line}", file=sys.stderr)
        for line in data.clipped:
            print(f"warning: {line}", file=sys.stderr)
        if not resuming:
            atomic_write_text(run_dir / CONFIG_FILE, config_yaml)
            atomic_write_text(
                run_dir / "run_info.json", json.dumps({**run_info(), "world_size": dist.world_size}, indent=2)
            )
            atomic_write_text(run_dir / SPLITS_FILE, splits.to_csv(index=False))

    # Resumed runs get their weights from the checkpoint: no need to fetch pretrained ones again.
    model = build_model(config, len(data.class_names), pretrained="none" if resuming else None)
    weights = (
        balanced_class_weights(train_labels, len(data.class_names))
        if train_config.class_balance == "weights"
        else None
    )
    loss = build_loss(config.model.output, weights, train_config.label_smoothing)
    network, optimizer, scheduler = prepare_network(model, train_config, dist)
    hooks = ClassifierHooks(
        model, network, loss, train_config, dist, seed=config.seed,
        train_set=CropDataset(train_crops, train_labels, build_augmentation(config.data.augment)),
        train_labels=train_labels, val_set=CropDataset(val_crops, val_labels) if len(val_crops) else None,
        run_dir=run_dir,
    )  # fmt: skip
    loop = EpochLoop(
        model, optimizer, train_config.epochs, run_dir,
        identity={"recipe": config_yaml, "studies": splits.astype(str).to_numpy().tolist()},
        scheduler=scheduler, scheduler_interval="epoch", log=tqdm.write, loss_key="train_loss",
        best=BestEpoch(train_config.monitor, higher_is_better=train_config.monitor != "val_loss",
                       path=run_dir / BEST, patience=train_config.early_stopping_patience),
        global_rng=True, history_file=run_dir / HISTORY_FILE, is_main=dist.is_main,
        extra={"config_yaml": config_yaml, "class_names": data.class_names,
               "weights_source": model.weights_source},
    )  # fmt: skip
    fit = loop.run(hooks)
    if dist.is_main:
        summary = {
            "best_epoch": fit.best_epoch,
            "monitor": train_config.monitor,
            "best_value": fit.best_value,
            "epochs_run": len(fit.history),
            "stopped_early": fit.stopped_early,
            "resumed_from_epoch": fit.resumed_from_epoch,
            "weights_source": fit.extra["weights_source"],
            "counts": data.counts(),
            "class_names": data.class_names,
            "world_size": dist.world_size,
        }
        atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    return TrainOutcome(run_dir, fit, data)


def train_recipe(
    recipe: ExperimentConfig, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """The registry's train entry: a run folder with the best and last checkpoints (nothing is bundled)."""
    if register_into is not None:
        raise InputError("--bundle: xray-lesions recipes train a run folder, not a bundled model")
    outcome = train_experiment(recipe, run_dir)
    fit = outcome.fit
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process reports
        logger.info("best epoch %s: %s=%.4f", fit.best_epoch, recipe.train.monitor, fit.best_value)
    return {"run": outcome.run_dir, "best checkpoint": outcome.run_dir / BEST}
