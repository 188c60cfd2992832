"""The epoch loop: freeze/unfreeze schedule, validation, best/last checkpoints, early stopping, resume."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler
from tqdm import tqdm

from spinedx.io.atomic import atomic_write_text
from spinedx.tasks.xray_lesions.config import TrainConfig
from spinedx.tasks.xray_lesions.model import BEST
from spinedx.tasks.xray_lesions.network import RoiClassifier
from spinedx.training.checkpoints import LAST, capture_rng_state, restore_rng_state, save_checkpoint
from spinedx.training.distributed import DistContext

HISTORY = "history.json"


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    seconds_per_epoch: list[float] = field(default_factory=list)


def _monitor_improved(monitor: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if monitor == "val_loss" else value > best


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


class Trainer:
    def __init__(
        self,
        model: RoiClassifier,
        loss: nn.Module,
        config: TrainConfig,
        run_dir: Path,
        dist: DistContext,
        *,
        seed: int,
        checkpoint_extra: dict[str, Any],
    ):
        self.model = model
        self.loss = loss
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = dist
        self.seed = seed
        self.checkpoint_extra = checkpoint_extra
        head_params = list(model.head.parameters())
        backbone_params = list(model.backbone.parameters())
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(
            [
                {"params": head_params, "lr": config.lr},
                {"params": backbone_params, "lr": config.backbone_lr},
            ],
            weight_decay=config.weight_decay,
        )
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.freeze_backbone_epochs == -1:
            # Frozen for good: keep the backbone out of DDP's gradient buckets altogether.
            model.set_backbone_trainable(False)
        self.network: nn.Module = (
            DistributedDataParallel(model, find_unused_parameters=config.freeze_backbone_epochs > 0)
            if dist.enabled
            else model
        )
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)
            if config.scheduler == "cosine"
            else None
        )

    def _backbone_frozen(self, epoch: int) -> bool:
        frozen_epochs = self.config.freeze_backbone_epochs
        return frozen_epochs == -1 or epoch <= frozen_epochs

    def _train_loader(self, dataset: Dataset, labels: np.ndarray, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        per_rank_batch = max(1, self.config.batch_size // self.dist.world_size)
        if self.config.class_balance == "sampler":
            weights = 1.0 / np.bincount(labels)[labels]
            sampler_generator = torch.Generator().manual_seed(self.seed * 1000 + epoch * 97 + self.dist.rank)
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=math.ceil(len(labels) / self.dist.world_size),
                replacement=True,
                generator=sampler_generator,
            )
            return DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler)
        if self.dist.enabled:
            sampler = DistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(epoch)
            return DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler)
        return DataLoader(dataset, batch_size=per_rank_batch, shuffle=True, generator=generator)

    def _train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        frozen = self._backbone_frozen(epoch)
        self.model.set_backbone_trainable(not frozen)
        self.network.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{self.config.epochs}",
            leave=False,
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        for images, targets in bar:
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = self.network(images)
            loss = self.loss(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(targets)
            correct += int((self.model.probabilities(logits.detach()).argmax(1) == targets).sum())
            seen += len(targets)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        return {
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "backbone_frozen": frozen,
        }

    @torch.no_grad()
    def _validate(self, dataset: Dataset) -> dict[str, float]:
        probabilities, labels = predict_probabilities(
            self.model, dataset, self.config.batch_size, self.config.channels_last
        )
        predictions = probabilities.argmax(1)
        clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
        return {
            "val_loss": float(-np.log(clipped).mean()),
            "val_accuracy": float(accuracy_score(labels, predictions)),
            "val_balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
            "val_macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        }

    def _state(self, epoch: int, history: list, best: tuple[int, float | None], stale: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": epoch,
            "history": history,
            "best_epoch": best[0],
            "best_value": best[1],
            "epochs_without_improvement": stale,
            "rng": capture_rng_state(),
            **self.checkpoint_extra,
        }

    def fit(
        self,
        train_set: Dataset,
        train_labels: np.ndarray,
        val_set: Dataset | None,
        resume_state: dict[str, Any] | None = None,
    ) -> FitResult:
        config = self.config
        history: list[dict[str, Any]] = []
        best_epoch, best_value, stale, start_epoch = 0, None, 0, 1
        if resume_state is not None:
            self.model.load_state_dict(resume_state["model"])
            self.optimizer.load_state_dict(resume_state["optimizer"])
            if self.scheduler:
                self.scheduler.load_state_dict(resume_state["scheduler"])
            restore_rng_state(resume_state["rng"])
            history = list(resume_state["history"])
            best_epoch, best_value = resume_state["best_epoch"], resume_state["best_value"]
            stale = resume_state["epochs_without_improvement"]
            start_epoch = resume_state["epoch"] + 1
        result = FitResult(history, best_epoch, best_value, resumed_from_epoch=start_epoch - 1)
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            loader = self._train_loader(train_set, train_labels, epoch)
            row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(loader, epoch)}
            row.update(self._validate(val_set) if val_set is not None else {})
            if self.scheduler:
                self.scheduler.step()
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            value = row.get(config.monitor, -row["train_loss"])
            improved = _monitor_improved(config.monitor, value, best_value)
            if improved:
                best_epoch, best_value, stale = epoch, value, 0
            else:
                stale += 1
            if self.dist.is_main:
                state = self._state(epoch, history, (best_epoch, best_value), stale)
                if improved:
                    best_keys = ("model", "epoch", *self.checkpoint_extra)
                    save_checkpoint(self.run_dir / BEST, {key: state[key] for key in best_keys})
                save_checkpoint(self.run_dir / LAST, state)
                atomic_write_text(self.run_dir / HISTORY, json.dumps(history, indent=2))
                shown = {
                    key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()
                }
                tqdm.write(
                    " ".join(f"{key}={value}" for key, value in shown.items()) + (" *" if improved else "")
                )
            self.dist.barrier()
            if config.early_stopping_patience and stale >= config.early_stopping_patience:
                result.stopped_early = True
                break
        result.best_epoch, result.best_value = best_epoch, best_value
        return result
