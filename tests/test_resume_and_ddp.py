"""A killed training resumes from its last finished epoch; torchrun DDP on CPU matches one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides


def train_command(data_dir: Path, out: Path, *extra: str, launcher: list[str] | None = None) -> list[str]:
    sets = [
        item for o in tiny_overrides(data_dir, "train.deterministic=true", *extra) for item in ("--set", o)
    ]
    launcher = launcher or [sys.executable, "-m", "spinedx"]
    return [*launcher, "train", str(REPO / "configs/xray_lesions.yaml"), "--out", str(out), *sets]


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


def test_killed_run_resumes_without_losing_epochs(tiny_xray, tmp_path):
    epochs = "train.epochs=4"
    reference = tmp_path / "reference"
    subprocess.run(train_command(tiny_xray, reference, epochs), check=True, capture_output=True, timeout=300)

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_xray, run_dir, epochs), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "history.json").is_file() and len(history(run_dir)) >= 2:
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("training finished before it could be killed; make the run longer")
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before_kill = len(history(run_dir))
    assert 2 <= finished_before_kill < 4

    resumed = subprocess.run(
        train_command(tiny_xray, run_dir, epochs), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} after epoch {finished_before_kill}" in resumed.stdout
    resumed_history, reference_history = history(run_dir), history(reference)
    assert [row["epoch"] for row in resumed_history] == [1, 2, 3, 4]
    for ours, theirs in zip(resumed_history, reference_history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)


def test_resume_refuses_a_different_recipe(tiny_xray, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(
        train_command(tiny_xray, run_dir, "train.epochs=1"), check=True, capture_output=True, timeout=300
    )
    changed = subprocess.run(train_command(tiny_xray, run_dir, "train.epochs=1", "train.lr=0.01"),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert changed.returncode == 2 and "different recipe" in changed.stderr


def test_torchrun_two_processes_matches_one(tiny_xray, tmp_path):
    single, distributed = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(
        train_command(tiny_xray, single, "train.epochs=3"), check=True, capture_output=True, timeout=300
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "spinedx"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(train_command(tiny_xray, distributed, "train.epochs=3", launcher=torchrun),
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((distributed / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    one, two = history(single)[-1], history(distributed)[-1]
    # Same global batch, different sample-to-process assignment: equal within noise, not bit-equal.
    assert abs(one["val_accuracy"] - two["val_accuracy"]) <= 0.15
    assert abs(one["val_loss"] - two["val_loss"]) <= 0.25
