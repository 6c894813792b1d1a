"""A shipped Flickr8k recipe, start to finish, on this machine's CPU, timed.

Usage (from the repository root):
    .venv/bin/python benchmarks/cpu_flickr8k_recipe.py --out work/cpu_recipe [--no-bf16]
    .venv/bin/python benchmarks/cpu_flickr8k_recipe.py --config flickr8k_ensemble --out work/cpu_ensemble
    .venv/bin/python benchmarks/cpu_flickr8k_recipe.py --config flickr8k_ensemble --out DIR --summarize-only

``--config flickr8k_ensemble`` times the default model's recipe (two members side by side, a soup,
the int8 ensemble scored on the dev photos; no export: the ensemble is the model). The wall time
is from the ``start`` to the ``end`` file the run writes in OUT (seconds since the epoch), so that
``--summarize-only`` summarizes a run started by hand with the same command the same way, adding
each stage's start and end within the run where the stage ran in its own process (first line of
its ``stage.log``, its result file's time) and each feature cache's finishing time (its index).

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
from datetime import datetime
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


def stage_window(run_dir: Path, started: float) -> dict:
    """Minutes from the recipe's start to a stage's start and end, where it ran in its own process."""
    log, result = run_dir / "stage.log", run_dir / "stage_result.json"
    if not (log.exists() and result.exists()):
        return {}
    first = log.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    try:
        began = datetime.strptime(first[:19], "%Y-%m-%d %H:%M:%S").timestamp()  # logging writes local time
    except ValueError:
        return {"ended_minute": round((result.stat().st_mtime - started) / 60, 1)}
    return {"started_minute": round((began - started) / 60, 1), "ended_minute": round((result.stat().st_mtime - started) / 60, 1)}


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
    parser.add_argument("--config", default="flickr8k_lite0_shipped", help="the recipe to time")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--summarize-only", action="store_true",
                        help="summarize the run already in OUT (its start/end files) without running it")
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir, export = out / "run", out / "export"
    train = [sys.executable, "-m", "captioner", "train", "--config", args.config, "--data", args.data,
             "--device", "cpu", "--out", str(run_dir), "--quiet", *(["--set", "cpu_bf16=false"] if args.no_bf16 else [])]  # fmt: skip
    summary: dict = {
        "machine": describe_machine(),
        "command": " ".join(train),
    }
    if args.summarize_only:
        returncode = int((out / "rc").read_text()) if (out / "rc").exists() else 1
    else:
        (out / "start").write_text(f"{int(time.time())}\n")
        returncode, _ = run(train, out / "train.log")
        (out / "rc").write_text(f"{returncode}\n")
        (out / "end").write_text(f"{int(time.time())}\n")
    started = float((out / "start").read_text())
    if (out / "end").exists():
        summary["recipe_minutes"] = round((float((out / "end").read_text()) - started) / 60, 1)
    summary["returncode"] = returncode
    summary["feature_caches_finished_minutes"] = {
        index.parent.name: round((index.stat().st_mtime - started) / 60, 1)
        for index in sorted((run_dir / "features").glob("*/index.json"))
    }
    state_path = run_dir / "pipeline.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        summary["parallel"] = state["recipe"].get("parallel", 1)
        summary["stages"] = {
            name: {"seconds": stage["seconds"], **stage_window(Path(stage["run_dir"]), started),
                   **(stage_history(Path(stage["run_dir"])) if stage.get("kind", "train") == "train" else {"best": stage.get("best")})}
            for name, stage in state["finished"].items()
        }  # fmt: skip
    if returncode == 0 and args.config == "flickr8k_lite0_shipped":
        returncode, seconds = run([sys.executable, "-m", "captioner", "export", "--checkpoint", str(run_dir),
                                   "--out", str(export)], out / "export.log")  # fmt: skip
        summary["export"] = str(export)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
