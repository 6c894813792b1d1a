"""Plot training loss (or SCST reward) and validation CIDEr-D / BLEU-4 by epoch.

Usage: .venv/bin/python benchmarks/plot_training_history.py RUN_DIR [RUN_DIR ...] OUT.png
       .venv/bin/python benchmarks/plot_training_history.py --summary SUMMARY.json --runs ce,scst OUT.png

Each run (a run directory's ``history.jsonl``, or a run of a ``benchmarks/gpu_flickr8k_runs.py``
summary) gets one row: its training curve and its validation scores. Several runs in order show
stages of one model, e.g. cross-entropy training and the self-critical fine-tuning that started
from it (whose epoch 0 is the starting weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_runs(args: argparse.Namespace) -> list[tuple[str, list[dict]]]:
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
        # A file of several machine calls ({"calls": [summary, ...]}) holds the runs of all of them.
        runs = {name: run for call in summary.get("calls", [summary]) for name, run in call["runs"].items()}
        return [(name, runs[name]["history"]) for name in args.runs.split(",")]
    return [
        (Path(run).name, [json.loads(line) for line in (Path(run) / "history.jsonl").read_text().splitlines() if line.strip()])
        for run in args.run_dirs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="RUN_DIR ... OUT.png (or only OUT.png with --summary)")
    parser.add_argument("--summary", help="summary.json of benchmarks/gpu_flickr8k_runs.py")
    parser.add_argument("--runs", default="", help="with --summary: comma-separated run names, in order")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    *args.run_dirs, out = args.paths
    out = Path(out)
    runs = read_runs(args)
    figure, axes = plt.subplots(len(runs), 2, figsize=(10, 3.6 * len(runs)), squeeze=False)
    for (name, history), (train_axis, score_axis) in zip(runs, axes):
        trained = [h for h in history if "train_loss" in h or "train_reward" in h]
        if trained and "train_reward" in trained[0]:
            train_axis.plot([h["epoch"] for h in trained], [h["train_reward"] for h in trained], marker="o")
            train_axis.set(title=f"{name}: mean CIDEr-D reward of sampled captions", xlabel="epoch")
        else:
            train_axis.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained], marker="o")
            train_axis.set(title=f"{name}: training cross-entropy", xlabel="epoch", ylabel="nats per word")
        epochs = [h["epoch"] for h in history]
        score_axis.plot(epochs, [h["val"]["CIDEr"] for h in history], marker="o", label="CIDEr-D")
        score_axis.plot(epochs, [h["val"]["BLEU-4"] for h in history], marker="s", label="BLEU-4")
        score_axis.set(title=f"{name}: validation (beam 3)", xlabel="epoch")
        score_axis.legend()
        for axis in (train_axis, score_axis):
            axis.grid(alpha=0.3)
    if args.title:
        figure.suptitle(args.title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
