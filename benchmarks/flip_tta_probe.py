"""Would averaging a photo's regions with its mirror image's raise dev CIDEr-D? Probe on Flickr8k dev.

Usage: .venv/bin/python benchmarks/flip_tta_probe.py [--checkpoint RUN_DIR ...] [--cache /tmp/f8k_dev_regions_flip.pt] [--mirror-weights 0.3,0.5]

Test-time augmentation at the feature level: the encoder also sees the photo flipped left to
right; that grid is flipped back so that each cell covers the same part of the photo, and the
two grids are averaged (weight ``--mirror-weights`` on the mirrored one) before the decoder
reads them. Costs a second CNN forward per photo. Prints dev scores (beam 3, each model's own
decoding settings, decoder alone) with and without it, for every checkpoint named.
The two region grids of the 1,000 dev photos are cached in ``--cache`` (all checkpoints named
must share the frozen encoder, which the shipped Lite0 models do).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.data.readers import load_records
from captioner.decoding import decode
from captioner.metrics import score_captions
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def dev_regions(captioner: Captioner, records: list, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, R, D) regions of the dev photos and of their mirror images (grid flipped back)."""
    if cache.exists():
        stored = torch.load(cache)
        return stored["plain"], stored["mirrored"]
    rows, columns = captioner.grid_size
    plain, mirrored = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for start in tqdm(range(0, len(records), 50), desc="encoding dev twice", unit="batch"):
            pixels = torch.stack([captioner.model.encoder.preprocess(load_rgb_image(r.image_path))
                                  for r in records[start : start + 50]])
            plain.append(captioner.model.encode(pixels))
            flipped = captioner.model.encode(torch.flip(pixels, dims=[3]))
            grid = flipped.reshape(flipped.shape[0], rows, columns, -1)
            mirrored.append(torch.flip(grid, dims=[2]).reshape(flipped.shape))
    print(f"encoded {len(records)} dev photos twice in {time.perf_counter() - started:.0f} s")
    stored = {"plain": torch.cat(plain), "mirrored": torch.cat(mirrored)}
    torch.save(stored, cache)
    return stored["plain"], stored["mirrored"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=None)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--cache", default="/tmp/f8k_dev_regions_flip.pt")
    parser.add_argument("--mirror-weights", default="0.5")
    parser.add_argument("--beam", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(describe_machine())
    records = load_records(args.data, split="val")
    references = {r.image_id: list(r.captions) for r in records}
    plain = mirrored = None
    for checkpoint in args.checkpoint or [None]:
        # The probe mixes the mirror image in itself: the model's own eval.mirror_weight stays off.
        captioner = Captioner.from_pretrained(checkpoint, device="cpu")
        captioner.model.use_mirror_average(0.0)
        if plain is None:
            plain, mirrored = dev_regions(captioner, records, Path(args.cache))
        settings = captioner.default_settings(args.beam)
        print(f"== {captioner.source}")
        for weight in [0.0] + [float(w) for w in args.mirror_weights.split(",")]:
            regions = (1 - weight) * plain + weight * mirrored
            decoded = []
            with torch.inference_mode():
                for start in range(0, len(regions), 100):
                    decoded.extend(decode(captioner.model.decoder, regions[start : start + 100],
                                          search_tokens(captioner.vocabulary), settings))
            candidates = {r.image_id: " ".join(captioner.vocabulary.decode(d.token_ids))
                          for r, d in zip(records, decoded)}
            scores = score_captions(references, candidates).corpus
            label = "photo alone" if weight == 0 else f"mirror weight {weight}"
            print(f"beam {args.beam}, {label}: " + "  ".join(
                f"{name} {'n/a' if scores[name] is None else f'{scores[name]:.4f}'}" for name in METRICS), flush=True)


if __name__ == "__main__":
    main()
