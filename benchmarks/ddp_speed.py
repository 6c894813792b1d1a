"""Data-parallel training against one process: step time and equality of the result.

Usage: .venv/bin/python benchmarks/ddp_speed.py [--images 600] [--processes 2] [--out DIR]

Builds a scenes dataset and an EfficientNet-Lite0 (64 px) feature cache, then trains the same
decoder for one epoch three ways with the same global batch: one process with all cores, one
process with gradient accumulation (4 pieces), and ``--processes`` gloo processes under torchrun
with one core each. Reports seconds per optimiser step, the largest weight difference from the
one-process run, and the loss of each. Dropout is off (its masks are drawn per process).
Writes benchmarks/results/ddp_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRADIENT_FREE = {"model.decoder.attention.score.bias"}  # softmax-invariant: true gradient 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(data: Path, cache: Path, out: Path, threads: int, processes: int, extra: list[str]) -> None:
    command = [
        "-m", "captioner", "train", "--config", "scenes_small_cnn", "--data", str(data), "--out", str(out),
        "--epochs", "1", "--encoder", "efficientnet_lite0", "--encoder-layer", "final", "--feature-cache", str(cache),
        "--set", "encoder.image_size=64", "--set", "encoder.pretrained=true", "--set", "decoder.dropout=0.0",
        "--set", "decoder.embed_dim=256", "--set", "decoder.hidden_dim=256", "--set", "decoder.attention_dim=256",
        "--set", "optim.batch_size=64", "--set", "data.captions_per_image=2", "--set", "eval.max_images=16",
        "--set", f"threads={threads}", "--quiet", *extra,
    ]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                   "--master-port", str(free_port()), *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, *command], check=True, env=env, capture_output=True, text=True)


def summary(run: Path, reference: Path | None) -> dict:
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()][-1]
    result = {"seconds_per_step": history["train_seconds"] / history["step"], "steps": history["step"],
              "train_loss": history["train_loss"]}
    if reference is not None:
        ours = load_file(str(run / "last" / "training_state.safetensors"))
        theirs = load_file(str(reference / "last" / "training_state.safetensors"))
        result["max_weight_difference"] = max(
            float((ours[k] - v).abs().max()) for k, v in theirs.items() if k.startswith("model.") and k not in GRADIENT_FREE
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_speed.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    machine = describe_machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from captioner.data.scenes.generator import build_scenes

        build_scenes(work / "scenes", seed=0, sizes={"train": args.images, "val": 16, "test": 16, "test-novel": 16},
                     workers=1, progress=False)
        subprocess.run([sys.executable, "-m", "captioner", "features", "--data", str(work / "scenes"), "--split",
                        "train,val", "--image-size", "64", "--out", str(work / "cache"), "--no-progress"],
                       check=True, capture_output=True)
        train(work / "scenes", work / "cache", work / "one", cores, 1, [])
        train(work / "scenes", work / "cache", work / "accumulated", cores, 1, ["--set", "optim.accumulation_steps=4"])
        train(work / "scenes", work / "cache", work / "ddp", max(1, cores // args.processes), args.processes, [])
        results = {
            "machine": machine,
            "command": f"benchmarks/ddp_speed.py --images {args.images} --processes {args.processes}",
            "one_process": summary(work / "one", None),
            "accumulation_4": summary(work / "accumulated", work / "one"),
            f"ddp_{args.processes}_processes_gloo": summary(work / "ddp", work / "one"),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
