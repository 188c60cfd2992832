"""Side-by-side table (markdown) of evaluated runs: metrics with 95% CIs (speed: see xray_recipes.py).

    python benchmarks/compare_runs.py runs/thesis runs/thesis_lite0 runs/xray_lesions

Each run folder must hold metrics.json (from `spinedx evaluate`) and history.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _with_ci(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.2f} ({low:.2f}–{high:.2f})"


def row(run_dir: Path) -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs_run = len(json.loads((run_dir / "history.json").read_text()))
    summary = json.loads((run_dir / "train_summary.json").read_text())
    per_class = " / ".join(f"{values['f1']:.2f}" for values in metrics["per_class"].values())
    return (
        f"| {run_dir.name} | {summary['weights_source']} | {_with_ci(metrics['accuracy'])} | "
        f"{_with_ci(metrics['balanced_accuracy'])} | {_with_ci(metrics['macro_avg']['f1'])} | {per_class} | "
        f"{_with_ci(metrics['roc_auc'])} | {metrics['n']} | {epochs_run} |"
    )


def main(run_dirs: list[str]) -> None:
    first = json.loads((Path(run_dirs[0]) / "metrics.json").read_text())
    classes = " / ".join(first["class_names"])
    print(
        f"| run | backbone weights | accuracy | balanced accuracy | macro-F1 | F1 {classes} | ROC-AUC | "
        "test crops | epochs run |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run_dir in run_dirs:
        print(row(Path(run_dir)))


if __name__ == "__main__":
    main(sys.argv[1:])
