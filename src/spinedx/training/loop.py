"""One resumable epoch loop for the tasks' trainers: they supply hooks, the loop owns the rest.

A task describes an epoch with :class:`TrainingHooks` — ``on_epoch_start`` (the epoch's batches),
``train_step`` (the loss of one batch), ``validate`` and ``on_epoch_end`` — and :class:`EpochLoop`
runs the epochs: optimiser steps, the scheduler (per step or per epoch), per-epoch checkpoints
written atomically, the history, the best epoch by one figure with early stopping
(:class:`BestEpoch`), progress (a tqdm bar per epoch on a terminal, a line every few epochs) and
the one resume rule. Under torchrun every process runs the loop; only the main one writes.

Resume rule: ``work_dir/last.pt`` carries a digest of the run's identity (the recipe values that
change training plus a manifest of the data, e.g. the sample ids). The same identity resumes after
the last finished epoch; another one is a one-line :class:`~spinedx.errors.InputError` (exit 2 in
the CLI), never a silent restart or a silent mix of two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.training.checkpoints import (
    LAST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

logger = logging.getLogger(__name__)


def identity_digest(identity: Mapping[str, Any]) -> str:
    """A stable digest of a run's identity (JSON-serialisable values; paths and tuples as strings/lists)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StepResult:
    """What one training step computed: the loss to optimise, the batch size and named loss terms to log."""

    loss: torch.Tensor
    size: int
    terms: dict[str, float] = field(default_factory=dict)


class TrainingHooks:
    """What a task's training does differently; override ``on_epoch_start`` and ``train_step``."""

    def on_epoch_start(self, epoch: int) -> Iterable[Any]:
        """The batches of ``epoch`` (0-based), in order."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> StepResult:
        """Forward one batch; the loop does ``zero_grad``, ``backward`` and the optimiser/scheduler steps."""
        raise NotImplementedError

    def validate(self, epoch: int) -> dict[str, Any]:
        """Figures added to the epoch's record after its training (validation metrics, the state of a
        schedule); none by default."""
        return {}

    def on_epoch_end(self, epoch: int, record: dict[str, float]) -> None:
        """Called after the epoch's checkpoint is written."""

    def on_resume(self, epoch: int) -> None:
        """Called when a run resumes after ``epoch`` finished epochs (e.g. to say so in the task's log)."""


@dataclass
class BestEpoch:
    """Keep the weights of the best epoch by one figure of the record; optionally stop when it stalls.

    A record without ``key`` (no validation data) is judged by its training loss, lower being better.
    """

    key: str
    higher_is_better: bool = True
    path: Path | None = None
    """Where the best epoch's weights go (``model``, ``epoch`` and the loop's ``extra``), atomically."""
    patience: int = 0
    """Stop after this many epochs without improvement (0: never)."""


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    resumed_from_epoch: int
    seconds: float
    """Training time of all epochs, across resumes."""
    best_epoch: int = 0
    """The best epoch (1-based) by :attr:`EpochLoop.best`; 0 without one."""
    best_value: float | None = None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """The loop's ``extra`` as its first start saved them."""


def trained_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights after the last finished epoch of the loop that ran in ``work_dir``."""
    return load_checkpoint(Path(work_dir) / LAST)["model"]


@dataclass
class EpochLoop:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    work_dir: Path
    identity: Mapping[str, Any]
    """Recipe values that change training and a manifest of the data (see the module's resume rule)."""
    scheduler: Any | None = None
    """Stepped as :attr:`scheduler_interval` says."""
    generator: torch.Generator | None = None
    """A generator the hooks draw from across epochs; saved and restored with the checkpoint."""
    label: str = ""
    """Prefix of progress lines (e.g. the fold)."""
    log_every: int = 1
    """Log every n-th epoch (the first and last always)."""
    log: Callable[[str], None] = logger.info
    """Where progress lines go."""
    scheduler_interval: Literal["step", "epoch"] = "step"
    """Step the scheduler after every optimiser step, or once after every epoch."""
    loss_key: str = "loss"
    """The record's name of the epoch's mean training loss (e.g. ``train_loss`` beside ``val_loss``)."""
    best: BestEpoch | None = None
    global_rng: bool = False
    """Save and restore the process's Python, NumPy and torch random states with every checkpoint, for
    augmentations that draw from them."""
    history_file: Path | None = None
    """A JSON copy of the history, rewritten (atomically) after every epoch."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Values written into every checkpoint (and the best one), e.g. what a loader needs beside the
    weights; a resumed run keeps those of its first start."""
    is_main: bool = True
    """False in the other processes of a torchrun: they train but write and log nothing."""

    def run(self, hooks: TrainingHooks) -> LoopResult:
        """Train the remaining epochs; returns the history of all epochs."""
        work_dir = Path(self.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = work_dir / LAST
        digest = identity_digest(self.identity)
        self.extra = dict(self.extra)
        self._best = {"epoch": 0, "value": None, "stale": 0, "stopped": False}
        start, seconds, history = self._resume(checkpoint, digest)
        if start:
            hooks.on_resume(start)
        # A run that stopped early is finished: resuming it trains nothing more.
        for epoch in range(self.epochs if self._best["stopped"] else start, self.epochs):
            began = time.perf_counter()
            self.model.train()
            totals: dict[str, float] = {}
            seen = 0
            batches = hooks.on_epoch_start(epoch)
            # A bar on a terminal (tqdm switches itself off otherwise), progress lines in any case.
            bar = tqdm(batches, desc=f"{self.label}epoch {epoch + 1}/{self.epochs}", leave=False,
                       disable=None if self.is_main else True)  # fmt: skip
            for batch in bar:
                step = hooks.train_step(batch)
                self.optimizer.zero_grad(set_to_none=True)
                step.loss.backward()
                self.optimizer.step()
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                seen += step.size
                for name, value in {self.loss_key: step.loss.item(), **step.terms}.items():
                    totals[name] = totals.get(name, 0.0) + value * step.size
            record: dict[str, Any] = {name: value / max(seen, 1) for name, value in totals.items()}
            record.update(hooks.validate(epoch))
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            elapsed = time.perf_counter() - began
            seconds += elapsed
            record.update(epoch=epoch + 1, seconds=elapsed)
            history.append(record)
            improved = self._judge(record)
            if self.is_main:
                if improved and self.best is not None and self.best.path is not None:
                    save_checkpoint(self.best.path, {"model": self.model.state_dict(), "epoch": epoch + 1,
                                                     **self.extra})  # fmt: skip
                save_checkpoint(checkpoint, self._state(digest, epoch + 1, seconds, history))
                if self.history_file is not None:
                    atomic_write_text(Path(self.history_file), json.dumps(history, indent=2))
                if epoch == start or (epoch + 1) % self.log_every == 0 or epoch + 1 == self.epochs:
                    self.log(self._progress_line(record, seconds, improved))
            hooks.on_epoch_end(epoch, record)
            if self._best["stopped"]:
                break
        self.model.eval()
        return LoopResult(history, start, seconds, self._best["epoch"], self._best["value"],
                          self._best["stopped"], self.extra)  # fmt: skip

    def _judge(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` is the best epoch so far (by :attr:`best`); counts towards early stopping."""
        if self.best is None:
            return False
        higher_is_better = self.best.higher_is_better and self.best.key in record
        value = float(record.get(self.best.key, record.get(self.loss_key, math.nan)))
        best = self._best["value"]
        if best is None or math.isnan(best):
            improved = not math.isnan(value)
        else:
            improved = value > best if higher_is_better else value < best
        if improved:
            self._best.update(epoch=record["epoch"], value=value, stale=0)
        else:
            self._best["stale"] += 1
        self._best["stopped"] = bool(self.best.patience) and self._best["stale"] >= self.best.patience
        return improved

    def _progress_line(self, record: dict[str, Any], seconds: float, improved: bool) -> str:
        line = f"{self.label}epoch {record['epoch']}/{self.epochs} {self.loss_key} "
        line += f"{record.get(self.loss_key, float('nan')):.4f}"
        if self.best is not None and self.best.key in record:
            line += f" {self.best.key} {record[self.best.key]:.4f}" + (" *" if improved else "")
        return f"{line} ({seconds:.0f} s)"

    def _state(self, digest: str, epoch: int, seconds: float, history: list[dict]) -> dict[str, Any]:
        state = {
            "identity": digest,
            "epoch": epoch,
            "seconds": seconds,
            "history": history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        if self.global_rng:
            state["rng"] = capture_rng_state()
        if self.best is not None:
            state["best"] = dict(self._best)
        if self.extra:
            state["extra"] = dict(self.extra)
        return state

    def _resume(self, checkpoint: Path, digest: str) -> tuple[int, float, list[dict]]:
        if not checkpoint.is_file():
            return 0, 0.0, []
        state = load_checkpoint(checkpoint)
        if state.get("identity") != digest:
            raise InputError(
                f"{checkpoint}: from another recipe or other data (this run has a different recipe or "
                f"data manifest); use a new output folder or remove {checkpoint.parent} to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        if self.global_rng:
            restore_rng_state(state["rng"])
        if self.best is not None:
            self._best.update(state["best"])
        self.extra = dict(state.get("extra", self.extra))
        return int(state["epoch"]), float(state["seconds"]), list(state["history"])
