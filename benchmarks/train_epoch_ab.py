"""Training epochs on Flickr8k with this tree's code against another tree's (an older commit).

Runs ``captioner train`` for a few epochs of a cross-entropy recipe and of a self-critical recipe
with each source tree in turn, alternating (this tree, the other, this, ...), on the same cached
features, and reports each epoch's seconds of training steps (``train_seconds`` in the run's
history, validation not counted) and its dev scores. Make the other tree with
``git worktree add /tmp/old COMMIT``.

    .venv/bin/python benchmarks/train_epoch_ab.py --data ../shared/datasets/flickr8k \\
        --baseline-src /tmp/old/src --out work/train_epoch_ab
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

REPO = Path(__file__).resolve().parents[1]


def run_stage(source: Path, name: str, args: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source))
    started = time.time()
    log = out.with_suffix(".log")
    with log.open("w", encoding="utf-8") as handle:
        status = subprocess.call([sys.executable, "-m", "captioner", "train", *args, "--out", str(out), "--quiet"],
                                 cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if status != 0:
        raise SystemExit(f"{name} failed with exit status {status}; see {log}")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if h["epoch"] > 0]
    return {
        "stage": name,
        "code": str(source),
        "wall_seconds": round(time.time() - started, 1),
        "train_seconds": [h["train_seconds"] for h in epochs],
        "CIDEr-D": [round(h["val"]["CIDEr"], 4) for h in epochs],
        "BLEU-4": [round(h["val"]["BLEU-4"], 4) for h in epochs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--baseline-src", required=True, type=Path, help="the other tree's src/ folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two trees")
    parser.add_argument("--feature-cache", default="work/f8k_lite0_final")
    parser.add_argument("--scst-from", default="src/captioner/pretrained/flickr8k-lite0",
                        help="the model self-critical training starts from")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {"this": REPO / "src", "baseline": args.baseline_src.resolve()}
    common = ["--data", args.data, "--set", f"optim.epochs={args.epochs}",
              "--set", f"data.feature_cache={args.feature_cache}"]
    stages = {
        "cross_entropy": ["--config", "flickr8k_lite0", *common],
        "self_critical": ["--config", "flickr8k_lite0_scst", *common, "--set", f"init_from={args.scst_from}"],
    }
    print(describe_machine(), flush=True)
    results = []
    for round_number in range(1, args.rounds + 1):
        for stage, stage_args in stages.items():
            for tree, source in trees.items():
                out = args.out / f"{stage}_{tree}_{round_number}"
                result = run_stage(source, stage, stage_args, out)
                result.update(tree=tree, round=round_number)
                results.append(result)
                print(json.dumps(result), flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
