"""EpochLoop: best epoch and early stopping, per-epoch schedules, history file, checkpoint extras, resume."""

import json

import pytest
import torch

from spinedx.errors import InputError
from spinedx.training.checkpoints import load_checkpoint
from spinedx.training.loop import BestEpoch, EpochLoop, StepResult, TrainingHooks


class Hooks(TrainingHooks):
    """Fits y = 2x; ``validation`` gives the figure each epoch reports."""

    def __init__(self, model, validation):
        self.model, self.validation, self.resumed = model, list(validation), None
        self.x = torch.linspace(-1, 1, 8)[:, None]

    def on_epoch_start(self, epoch):
        return [self.x[:4], self.x[4:]]

    def train_step(self, batch):
        return StepResult(((self.model(batch) - 2 * batch) ** 2).mean(), len(batch))

    def validate(self, epoch):
        return {"val_score": self.validation[epoch]}

    def on_resume(self, epoch):
        self.resumed = epoch


def loop(tmp_path, epochs=6, patience=0, identity="a"):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return EpochLoop(model, optimizer, epochs, tmp_path, {"recipe": identity}, scheduler=scheduler,
                     scheduler_interval="epoch", loss_key="train_loss",
                     best=BestEpoch("val_score", path=tmp_path / "best.pt", patience=patience),
                     history_file=tmp_path / "history.json", extra={"classes": ["a", "b"]})  # fmt: skip


def test_best_epoch_checkpoint_early_stopping_and_history(tmp_path):
    training = loop(tmp_path, patience=2)
    result = training.run(Hooks(training.model, [0.1, 0.5, 0.4, 0.3, 0.9, 0.9]))
    assert result.stopped_early and [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert (result.best_epoch, result.best_value) == (2, 0.5)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 2 and best["classes"] == ["a", "b"]
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    assert set(result.history[0]) == {"train_loss", "val_score", "epoch", "seconds"}
    assert training.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)  # stepped once per epoch
    # A run that stopped early is finished: resuming it trains nothing more.
    again = loop(tmp_path, patience=2)
    hooks = Hooks(again.model, [0.1] * 6)
    resumed = again.run(hooks)
    assert hooks.resumed == 4 and len(resumed.history) == 4 and resumed.best_epoch == 2


def test_resume_continues_the_same_run_and_refuses_another(tmp_path):
    reference = loop(tmp_path / "reference", epochs=3)
    expected = reference.run(Hooks(reference.model, [0.1, 0.2, 0.3])).history
    first = loop(tmp_path / "killed", epochs=2)
    first.run(Hooks(first.model, [0.1, 0.2, 0.3]))
    resumed = loop(tmp_path / "killed", epochs=3)
    hooks = Hooks(resumed.model, [0.1, 0.2, 0.3])
    history = resumed.run(hooks).history
    assert hooks.resumed == 2
    assert [row["train_loss"] for row in history] == pytest.approx([row["train_loss"] for row in expected])
    with pytest.raises(InputError, match="different recipe"):
        other = loop(tmp_path / "killed", epochs=3, identity="b")
        other.run(Hooks(other.model, [0.1, 0.2, 0.3]))
