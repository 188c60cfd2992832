"""The radiograph classifier's epoch for :class:`~spinedx.training.loop.EpochLoop`: the freeze/unfreeze
schedule, class-balanced (and, under torchrun, per-process) loaders, and the validation figures.

The loop owns the rest: optimiser and scheduler steps, best/last checkpoints, early stopping,
the history and resuming.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from spinedx.tasks.xray_lesions.config import TrainConfig
from spinedx.tasks.xray_lesions.network import RoiClassifier
from spinedx.training.distributed import DistContext
from spinedx.training.loop import StepResult, TrainingHooks


@torch.no_grad()
def predict_probabilities(
    model: RoiClassifier, dataset: Dataset, batch_size: int, channels_last: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, C) and the dataset's labels (N,)."""
    model.eval()
    probabilities, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        probabilities.append(model.probabilities(model(images)))
        labels.append(targets)
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


def prepare_network(
    model: RoiClassifier, config: TrainConfig, dist: DistContext
) -> tuple[nn.Module, Any, Any]:
    """(network to train: ``model`` or its DDP wrapper, optimiser, per-epoch scheduler or None)."""
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(
        [
            {"params": list(model.head.parameters()), "lr": config.lr},
            {"params": list(model.backbone.parameters()), "lr": config.backbone_lr},
        ],
        weight_decay=config.weight_decay,
    )
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.freeze_backbone_epochs == -1:
        # Frozen for good: keep the backbone out of DDP's gradient buckets altogether.
        model.set_backbone_trainable(False)
    network: nn.Module = (
        DistributedDataParallel(model, find_unused_parameters=config.freeze_backbone_epochs > 0)
        if dist.enabled
        else model
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        if config.scheduler == "cosine"
        else None
    )
    return network, optimizer, scheduler


class ClassifierHooks(TrainingHooks):
    """One classifier epoch. ``network`` is ``model`` or its DistributedDataParallel wrapper."""

    def __init__(self, model: RoiClassifier, network: nn.Module, loss: nn.Module, config: TrainConfig,
                 dist: DistContext, *, seed: int, train_set: Dataset, train_labels: np.ndarray,
                 val_set: Dataset | None, run_dir: Path) -> None:  # fmt: skip
        self.model, self.network, self.loss, self.config, self.dist = model, network, loss, config, dist
        self.seed, self.train_set, self.train_labels, self.val_set = seed, train_set, train_labels, val_set
        self.run_dir = run_dir
        self.frozen = False

    def backbone_frozen(self, epoch: int) -> bool:
        """Whether the backbone is frozen in ``epoch`` (1-based, as the recipe counts)."""
        frozen_epochs = self.config.freeze_backbone_epochs
        return frozen_epochs == -1 or epoch <= frozen_epochs

    def on_resume(self, epoch: int) -> None:
        if self.dist.is_main:
            print(f"resuming {self.run_dir} after epoch {epoch}")

    def on_epoch_start(self, epoch: int) -> DataLoader:
        epoch += 1  # the loaders' seeds count epochs from 1
        self.frozen = self.backbone_frozen(epoch)
        self.model.set_backbone_trainable(not self.frozen)
        self.network.train()
        return self._train_loader(epoch)

    def _train_loader(self, epoch: int) -> DataLoader:
        config, dist, labels = self.config, self.dist, self.train_labels
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        per_rank_batch = max(1, config.batch_size // dist.world_size)
        if config.class_balance == "sampler":
            weights = 1.0 / np.bincount(labels)[labels]
            sampler_generator = torch.Generator().manual_seed(self.seed * 1000 + epoch * 97 + dist.rank)
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=math.ceil(len(labels) / dist.world_size),
                replacement=True,
                generator=sampler_generator,
            )
            return DataLoader(self.train_set, batch_size=per_rank_batch, sampler=sampler)
        if dist.enabled:
            sampler = DistributedSampler(
                self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(epoch)
            return DataLoader(self.train_set, batch_size=per_rank_batch, sampler=sampler)
        return DataLoader(self.train_set, batch_size=per_rank_batch, shuffle=True, generator=generator)

    def train_step(self, batch) -> StepResult:
        images, targets = batch
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.network(images)
        correct = int((self.model.probabilities(logits.detach()).argmax(1) == targets).sum())
        return StepResult(
            self.loss(logits, targets), len(targets), {"train_accuracy": correct / len(targets)}
        )

    @torch.no_grad()
    def validate(self, epoch: int) -> dict:
        figures: dict = {"backbone_frozen": self.frozen}
        if self.val_set is None:
            return figures
        probabilities, labels = predict_probabilities(
            self.model, self.val_set, self.config.batch_size, self.config.channels_last
        )
        predictions = probabilities.argmax(1)
        clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
        return figures | {
            "val_loss": float(-np.log(clipped).mean()),
            "val_accuracy": float(accuracy_score(labels, predictions)),
            "val_balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
            "val_macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        }

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        self.dist.barrier()  # the main process has written the checkpoints
