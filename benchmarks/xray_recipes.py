"""Training and inference throughput of the thesis recipe vs spinedx's recipe, measured in one run.

    python benchmarks/xray_recipes.py [--threads 2] [--seconds 15] [--rounds 2]

Each recipe's model is built as its config says (thesis: frozen VGG16, sigmoid head; spinedx:
EfficientNet-Lite0 fine-tuned, channels-last) and timed on random 128x128 crops with the
recipe's batch size. Training images/s counts forward + backward + optimizer step in the
unfrozen phase of the recipe (the thesis never unfreezes). Prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from spinedx.tasks.xray_lesions.config import ExperimentConfig, load_config
from spinedx.tasks.xray_lesions.model import build_model
from spinedx.training.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]


def _images(config: ExperimentConfig, batch: int) -> torch.Tensor:
    size = config.data.crop.size
    images = torch.rand(batch, 3, size, size)
    return images.contiguous(memory_format=torch.channels_last) if config.train.channels_last else images


def _rate(step, n_images: int, seconds: float) -> float:
    step()  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += n_images
    return done / (time.perf_counter() - started)


def measure(config: ExperimentConfig, seconds: float) -> tuple[float, float]:
    model = build_model(config, 2, pretrained="none")
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    model.set_backbone_trainable(config.train.freeze_backbone_epochs != -1)
    loss_fn = build_loss(config.model.output, None)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = config.train.batch_size
    images, targets = _images(config, batch), torch.randint(0, 2, (batch,))

    def train_step() -> None:
        model.train()
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step() -> None:
        model.eval()
        model.probabilities(model(images))

    return _rate(train_step, batch, seconds), _rate(infer_step, batch, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0, help="timing window per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best round counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, tuple[float, float]] = {}
    # Alternate the recipes and keep each one's best round, so a transient load on the machine
    # does not favour whichever recipe happened to run while it was quiet.
    for round_index in range(args.rounds):
        for name in ("thesis", "xray_lesions"):
            config = load_config(ROOT / "configs" / f"{name}.yaml")
            train_rate, infer_rate = measure(config, args.seconds)
            best_train, best_infer = results.get(name, (0.0, 0.0))
            results[name] = (max(best_train, train_rate), max(best_infer, infer_rate))
            print(
                f"round {round_index + 1}: {name} train {train_rate:.1f} infer {infer_rate:.1f} img/s",
                flush=True,
            )
    print(
        f"\n{'recipe':<14} {'backbone':<22} {'train img/s':>12} {'infer img/s':>12}   ({args.threads} threads)"
    )
    for name, (train_rate, infer_rate) in results.items():
        backbone = load_config(ROOT / "configs" / f"{name}.yaml").model.backbone
        print(f"{name:<14} {backbone:<22} {train_rate:>12.1f} {infer_rate:>12.1f}")
    (thesis_train, thesis_infer), (ours_train, ours_infer) = results["thesis"], results["xray_lesions"]
    print(
        f"\nratio xray_lesions / thesis: training {ours_train / thesis_train:.2f}x, "
        f"inference {ours_infer / thesis_infer:.2f}x"
    )


if __name__ == "__main__":
    main()
