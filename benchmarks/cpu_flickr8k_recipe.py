"""The shipped Flickr8k recipe, start to finish, on this machine's CPU, timed.

Usage (from the repository root):
    .venv/bin/python benchmarks/cpu_flickr8k_recipe.py --out work/cpu_recipe [--no-bf16]

Runs the one command a user types to train the shipped model, ``captioner train --config
flickr8k_lite0_shipped`` (EfficientNet-Lite0 features of the train and dev photos cached into
``OUT/run/features``, the cross-entropy stage, then the self-critical stage from its best
weights; the recipes train under bfloat16 autocast where the CPU computes it natively, and
``--no-bf16`` turns that off), then ``captioner export`` (fp16, as shipped). Writes
``OUT/summary.json``: the commands, the wall seconds of the whole recipe, of the feature caching
(until the cache's index was written) and of each stage, and each stage's dev scores by epoch.
Issue 6's bound is two hours on the 2-core CPU for the whole recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from gpu_flickr8k_runs import best_of_history, read_history  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def stage_history(run_dir: Path) -> dict:
    """Dev CIDEr-D by epoch (epoch 0: the starting weights of a self-critical stage) and the best
    trained epoch."""
    history = read_history(run_dir)
    best = best_of_history(history) or {}
    return {
        "dev_cider_by_epoch": {entry["epoch"]: round(entry["val"]["CIDEr"], 4) for entry in history if "val" in entry},
        "best_epoch": best.pop("epoch", None),
        "best_dev": {name: round(value, 4) for name, value in best.items()},
        "training_step_seconds": round(sum(entry.get("train_seconds", 0.0) for entry in history), 1),
    }


def run(command: list[str], log_path: Path) -> tuple[int, float]:
    print(f"== {' '.join(command)}  (log: {log_path})", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        returncode = subprocess.call(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"   {seconds:.0f} s" + (f", failed ({returncode})" if returncode else ""), flush=True)
    return returncode, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets/flickr8k")
    parser.add_argument("--out", type=Path, default=Path("work/cpu_recipe"))
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir, export = out / "run", out / "export"
    train = [sys.executable, "-m", "captioner", "train", "--config", "flickr8k_lite0_shipped", "--data", args.data,
             "--device", "cpu", "--out", str(run_dir), "--quiet", *(["--set", "cpu_bf16=false"] if args.no_bf16 else [])]  # fmt: skip
    summary: dict = {
        "machine": describe_machine(),
        "command": " ".join(train),
    }
    started = time.time()
    returncode, seconds = run(train, out / "train.log")
    summary["recipe_minutes"] = round(seconds / 60, 1)
    index = run_dir / "features" / "f8k_lite0_final" / "index.json"
    if index.exists():
        summary["feature_caching_seconds"] = round(index.stat().st_mtime - started, 1)
    state_path = run_dir / "pipeline.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        summary["stages"] = {
            name: {"seconds": stage["seconds"], **stage_history(Path(stage["run_dir"]))}
            for name, stage in state["finished"].items()
        }
    if returncode == 0:
        returncode, seconds = run([sys.executable, "-m", "captioner", "export", "--checkpoint", str(run_dir),
                                   "--out", str(export)], out / "export.log")  # fmt: skip
        summary["export"] = str(export)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
