"""Loss comparison for the spine segmenter: cross-entropy, Dice and their sum on one CV fold.

Trains fold ``--fold`` of configs/spine_seg.yaml once per loss (same data, seed and epochs) and
prints the held-out Dice and HD95 per class with 95% bootstrap CIs over patients.

    python benchmarks/seg_losses.py configs/spine_seg.yaml --out runs/seg_losses [--fold 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spinedx.recipes import read_recipe
from spinedx.tasks.spine_seg.config import parse_recipe
from spinedx.tasks.spine_seg.train import cross_validate

LOSSES = ("ce", "dice", "dice_ce")


def _cell(entry: dict) -> str:
    if entry["estimate"] is None:
        return "—"
    return f"{entry['estimate']:.3f} ({entry['lower']:.3f}–{entry['upper']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/seg_losses"))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for loss in LOSSES:
        recipe = parse_recipe(read_recipe(args.config, [*args.overrides, f"loss={loss}"]), str(args.config))
        metrics = cross_validate(recipe, args.out / loss, only_folds=[args.fold])
        rows.append((loss, metrics["classes"]))
    print(f"fold {args.fold} held-out images; mean Dice / HD95 (95% CI over patients)")
    for loss, classes in rows:
        cells = [
            f"{name} Dice {_cell(c['dice'])} HD95 {_cell(c['hd95'])}"
            for name, c in classes.items()
            if name != "background"
        ]
        print(f"{loss:8s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
