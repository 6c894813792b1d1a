"""A training epoch on cached features against the same epoch running the encoder.

Usage: .venv/bin/python benchmarks/cached_epoch_speed.py --features CACHE [--images 384] [--device cpu|cuda|auto]
       .venv/bin/python benchmarks/cached_epoch_speed.py --encoder resnet101 --untrained-encoder [--images 192]

Same records, same batches, same decoder (the Flickr8k recipe's sizes), same optimiser step; the
only difference is where the region grids come from: the fp16 memory-mapped cache of
``captioner features``, or the encoder run on the decoded JPEGs in the loop (frozen, as in
cached training). Reports seconds per image both ways and the speed-up.

``--encoder`` picks another encoder (default: the recipe's EfficientNet-Lite0); without
``--features`` the cache of the chosen images is built first (not timed). ``--untrained-encoder``
uses random weights, for backbones whose pretrained weights are not on the machine: the speed of
a forward pass does not depend on the values of the weights, so the timing is that of the
pretrained encoder, but such features are useless for captioning.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.data.batches import CaptionTrainingSet, collate_captions, make_loader
from captioner.data.readers import load_records
from captioner.data.text import Vocabulary, tokenize_caption
from captioner.encoders.base import EncoderConfig
from captioner.encoders.cache import FeatureCache, build_feature_cache
from captioner.recipes import recipe_path
from captioner.training.config import RunConfig
from captioner.training.inputs import CachedInput, InputKind, PixelInput, regions_from_inputs
from captioner.training.loop import build_model, caption_loss, make_optimizer, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(model, optimizer, dataset, kind, config, pad_id, device=torch.device("cpu")) -> float:
    loader = make_loader(dataset, batch_size=config.optim.batch_size, shuffle=True, seed=0,
                         collate_fn=collate_captions)
    _sync(device)
    started = time.perf_counter()
    for batch in loader:
        batch = batch.to(device)
        regions = regions_from_inputs(model, batch.inputs, kind)
        loss, _ = caption_loss(model.decoder(regions, batch.captions), batch.captions, pad_id, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help="feature cache of the Flickr8k train split (default: build one)")
    parser.add_argument("--encoder", default=None, help="encoder name (default: the recipe's, efficientnet_lite0)")
    parser.add_argument("--untrained-encoder", action="store_true", help="random encoder weights (timing only)")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu); fp32 either way")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    print(describe_machine())
    config = RunConfig.load(recipe_path("flickr8k_lite0"))
    config.data.captions_per_image = 1
    if args.encoder:
        config.encoder = EncoderConfig(name=args.encoder)
    if args.untrained_encoder:
        config.encoder.pretrained = False
    print(f"encoder: {config.encoder.name}{' (random weights, timing only)' if args.untrained_encoder else ''}")
    records = load_records(args.data, split="train")[: args.images]
    vocabulary = Vocabulary.build((tokenize_caption(c) for r in records for c in r.captions), min_count=1)
    torch.manual_seed(0)
    model = build_model(config, vocabulary).to(device)
    optimizer = make_optimizer(model, config)
    if args.features:
        cache = FeatureCache.open(args.features)
    else:
        cache_dir = Path(tempfile.mkdtemp(prefix="cached_epoch_speed_"))
        build_feature_cache(records, model.encoder, cache_dir, device=device, num_workers=0, progress=False)
        cache = FeatureCache.open(cache_dir)
    timings = {}
    for name, load_input, kind in (
        ("cached features", CachedInput(cache), InputKind.REGIONS),
        ("encoder in the loop", PixelInput(model.encoder.preprocess), InputKind.PIXELS),
    ):
        dataset = CaptionTrainingSet(records, vocabulary, load_input, captions_per_image=1,
                                     max_length=config.data.max_caption_words, seed=0)
        time_epoch(model, optimizer, torch.utils.data.Subset(dataset, range(min(config.optim.batch_size, len(dataset)))), kind, config,
                   vocabulary.pad_id, device)  # warm-up
        timings[name] = time_epoch(model, optimizer, dataset, kind, config, vocabulary.pad_id, device)
        print(f"{name:<20} {timings[name]:7.1f} s for {len(records)} images "
              f"({1000 * timings[name] / len(records):6.1f} ms/image)")
    speedup = timings["encoder in the loop"] / timings["cached features"]
    print(f"speed-up of cached-feature training: {speedup:.1f}x")


if __name__ == "__main__":
    main()
