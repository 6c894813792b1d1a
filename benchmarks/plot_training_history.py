"""Plot a run's training loss and validation CIDEr-D / BLEU-4 by epoch (from history.jsonl).

Usage: .venv/bin/python benchmarks/plot_training_history.py RUN_DIR OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    epochs = [h["epoch"] for h in history]
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_axis.set(title="training cross-entropy", xlabel="epoch", ylabel="nats per word")
    score_axis.plot(epochs, [h["val"]["CIDEr"] for h in history], marker="o", label="CIDEr-D")
    score_axis.plot(epochs, [h["val"]["BLEU-4"] for h in history], marker="s", label="BLEU-4")
    score_axis.set(title="validation (beam 3)", xlabel="epoch")
    score_axis.legend()
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(f"{run_dir.name}: {json.loads((run_dir / 'config.json').read_text())['encoder']['name']}")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
