"""Cold start of `spinedx analyze` on one slice, this checkout against an earlier commit, in one run.

    python benchmarks/cold_start.py [--rounds 5] [--baseline 25de979] [--image PATH] [--threads 2]

Each round runs, in fresh processes and alternating, ``python -m spinedx analyze IMAGE --task
mri-discs --out DIR`` with this checkout's package and with the baseline commit's package (checked
out into a temporary git worktree and put first on PYTHONPATH, same virtual environment). The
median and the spread of the wall time are printed side by side with their ratio, and the
in-process time of analysing the slice once models are loaded (the part a long-running service
pays per slice). Without --image a synthetic slice from `spinedx synth mri` is used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _wall_seconds(image: Path, out: Path, pythonpath: str | None, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [
        sys.executable,
        "-m",
        "spinedx",
        "analyze",
        str(image),
        "--task",
        "mri-discs",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def _in_process_seconds(image: Path, work: Path) -> float:
    from spinedx.io.volumes import read_sagittal
    from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline

    pipeline = MriDiscPipeline.bundled()
    slice_ = read_sagittal(image)
    pipeline.analyze(slice_, "warm-up")
    times = []
    for _ in range(5):
        started = time.perf_counter()
        pipeline.analyze(slice_, "timed")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline",
        default="25de979",
        help="git commit to compare with (default: before the cold-start work)",
    )
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spinedx-cold-start-"))
    image = args.image
    if image is None:
        from spinedx.synth.mri import generate_mri_dataset

        root = generate_mri_dataset(work / "mri", n_patients=1, seed=1, image_size=(384, 384))
        image = sorted((root / "images").glob("*.png"))[0]
    baseline = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
                   check=True, capture_output=True)  # fmt: skip
    try:
        seconds: dict[str, list[float]] = {"this checkout": [], f"baseline {args.baseline}": []}
        for round_ in range(args.rounds):
            seconds["this checkout"].append(_wall_seconds(image, work / f"now{round_}", None, args.threads))
            seconds[f"baseline {args.baseline}"].append(
                _wall_seconds(image, work / f"then{round_}", str(baseline / "src"), args.threads)
            )
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    print(f"`spinedx analyze` of one slice ({image.name}), fresh process, {args.rounds} alternating rounds")
    print("| layout | median wall s | min | max |\n| --- | --- | --- | --- |")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    now, then = (statistics.median(values) for values in seconds.values())
    print(f"cold start: baseline / this checkout = {then / now:.2f}x (target: <= 3 s)")
    print(
        f"in-process analysis of the slice, models loaded: {_in_process_seconds(image, work):.3f} s (median of 5)"
    )


if __name__ == "__main__":
    main()
