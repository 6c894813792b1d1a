"""CNN time per photo at inference on the CPU by how many photos go through it at once.

Usage: .venv/bin/python benchmarks/cnn_batch_chunks.py [--checkpoint NAME_OR_DIR] [--chunks 1,2,4,8,16,64]

Encodes 64 random 224 px inputs with the model's encoder(s) (no mirror average), in chunks of
each size, twice, and prints the better of the two in ms per photo. ``CaptioningModel``'s
``CPU_INFERENCE_CHUNK`` is chosen from this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.models import captioning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--chunks", default="1,2,4,8,16,64")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    captioner.model.use_mirror_average(0.0)
    images = torch.randn(64, 3, captioner.config.encoder.image_size, captioner.config.encoder.image_size)
    # The model's own chunking is lifted so that each size below is what the CNN really sees.
    captioning.CPU_INFERENCE_CHUNK = images.size(0)
    with torch.inference_mode():
        captioner.model.encode(images[:4])
        for chunk in (int(c) for c in args.chunks.split(",")):
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                for part in images.split(chunk):
                    captioner.model.encode(part)
                best = min(best, time.perf_counter() - started)
            print(f"{captioner.source}: chunks of {chunk:3d}: {best / images.size(0) * 1000:.1f} ms a photo", flush=True)


if __name__ == "__main__":
    main()
