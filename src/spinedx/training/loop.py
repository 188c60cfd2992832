"""One resumable epoch loop for the tasks' trainers: they supply hooks, the loop owns the rest.

A task describes an epoch with :class:`TrainingHooks` — ``on_epoch_start`` (the epoch's batches),
``train_step`` (the loss of one batch), ``validate`` and ``on_epoch_end`` — and :class:`EpochLoop`
runs the epochs: optimiser steps, the scheduler, per-epoch checkpoints written atomically, the
history, progress (a tqdm bar per epoch on a terminal, a line every few epochs) and the one resume
rule.

Resume rule: ``work_dir/last.pt`` carries a digest of the run's identity (the recipe values that
change training plus a manifest of the data, e.g. the sample ids). The same identity resumes after
the last finished epoch; another one is a one-line :class:`~spinedx.errors.InputError` (exit 2 in
the CLI), never a silent restart or a silent mix of two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from spinedx.errors import InputError
from spinedx.training.checkpoints import LAST, load_checkpoint, save_checkpoint

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

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation figures of the model after ``epoch`` (none by default)."""
        return {}

    def on_epoch_end(self, epoch: int, record: dict[str, float]) -> None:
        """Called after the epoch's checkpoint is written."""

    def on_resume(self, epoch: int) -> None:
        """Called when a run resumes after ``epoch`` finished epochs (e.g. to say so in the task's log)."""


@dataclass
class LoopResult:
    history: list[dict[str, float]]
    resumed_from_epoch: int
    seconds: float
    """Training time of all epochs, across resumes."""


@dataclass
class EpochLoop:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    work_dir: Path
    identity: Mapping[str, Any]
    """Recipe values that change training and a manifest of the data (see the module's resume rule)."""
    scheduler: Any | None = None
    """Stepped after every optimiser step (per-batch schedules)."""
    generator: torch.Generator | None = None
    """A generator the hooks draw from across epochs; saved and restored with the checkpoint."""
    label: str = ""
    """Prefix of progress lines (e.g. the fold)."""
    log_every: int = 1
    """Log every n-th epoch (the first and last always)."""
    log: Callable[[str], None] = logger.info
    """Where progress lines go."""

    def run(self, hooks: TrainingHooks) -> LoopResult:
        """Train the remaining epochs; returns the history of all epochs."""
        work_dir = Path(self.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = work_dir / LAST
        digest = identity_digest(self.identity)
        start, seconds, history = self._resume(checkpoint, digest)
        if start:
            hooks.on_resume(start)
        for epoch in range(start, self.epochs):
            began = time.perf_counter()
            self.model.train()
            totals: dict[str, float] = {}
            seen = 0
            batches = hooks.on_epoch_start(epoch)
            # A bar on a terminal (tqdm switches itself off otherwise), progress lines in any case.
            bar = tqdm(
                batches, desc=f"{self.label}epoch {epoch + 1}/{self.epochs}", leave=False, disable=None
            )
            for batch in bar:
                step = hooks.train_step(batch)
                self.optimizer.zero_grad(set_to_none=True)
                step.loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                seen += step.size
                for name, value in {"loss": step.loss.item(), **step.terms}.items():
                    totals[name] = totals.get(name, 0.0) + value * step.size
            record = {name: value / max(seen, 1) for name, value in totals.items()}
            record.update(hooks.validate(epoch))
            elapsed = time.perf_counter() - began
            seconds += elapsed
            record.update(epoch=epoch + 1, seconds=elapsed)
            history.append(record)
            save_checkpoint(checkpoint, self._state(digest, epoch + 1, seconds, history))
            if epoch == start or (epoch + 1) % self.log_every == 0 or epoch + 1 == self.epochs:
                self.log(f"{self.label}epoch {epoch + 1}/{self.epochs} loss {record.get('loss', float('nan')):.4f} "
                         f"({seconds:.0f} s)")  # fmt: skip
            hooks.on_epoch_end(epoch, record)
        self.model.eval()
        return LoopResult(history, start, seconds)

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
        return state

    def _resume(self, checkpoint: Path, digest: str) -> tuple[int, float, list[dict]]:
        if not checkpoint.is_file():
            return 0, 0.0, []
        state = load_checkpoint(checkpoint)
        if state.get("identity") != digest:
            raise InputError(
                f"{checkpoint}: from another recipe or other data (a different config); "
                f"use a new output folder or remove {checkpoint.parent} to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        return int(state["epoch"]), float(state["seconds"]), list(state["history"])
