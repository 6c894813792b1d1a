"""``captioner features``: encode a dataset's images once into a feature cache for training."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="encode a dataset's images into a feature cache",
        description="Run a frozen image encoder over every image of a dataset once and store the "
        "region features (float16, memory-mapped) so training never runs the CNN again. An "
        "existing cache for the same encoder and images is reused; an interrupted one resumes. "
        "Unreadable images are skipped and listed.",
    )
    parser.add_argument(
        "--data", required=True, help="dataset file or folder (any format captioner data reads)"
    )
    parser.add_argument(
        "--split", help="comma-separated splits to encode, e.g. train,val (default: all)"
    )
    parser.add_argument(
        "--encoder", default="efficientnet_lite0", help="encoder name (default: efficientnet_lite0; also efficientnet_lite2, resnet50, ...)"
    )
    parser.add_argument(
        "--layer", help="which grid, e.g. final, stage7 or 14x14 for efficientnet_lite0, layer3 for ResNets"
    )
    parser.add_argument(
        "--encoder-weights", metavar="PATH", help="state dict (.pth/.safetensors) to load"
    )
    parser.add_argument(
        "--image-size", type=int, default=224, help="input size in pixels (default: 224)"
    )
    parser.add_argument(
        "--fine-tune-blocks",
        type=int,
        default=0,
        help="with --trunk-only: store activations before the last N blocks, which training fine-tunes",
    )
    parser.add_argument(
        "--trunk-only", action="store_true", help="store trunk activations instead of features"
    )
    parser.add_argument(
        "--mirror",
        action="store_true",
        help="encode every photo flipped left to right (a second cache for data.mirror_feature_cache)",
    )
    parser.add_argument(
        "--out", required=True, metavar="CACHE_DIR", help="folder to write the cache into"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, default=2, help="image decoding processes (default: 2)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from captioner.data.readers import load_records
    from captioner.encoders import EncoderConfig, build_encoder
    from captioner.encoders.cache import build_feature_cache
    from captioner.errors import ConfigError

    if args.fine_tune_blocks and not args.trunk_only:
        raise ConfigError(
            "--fine-tune-blocks only changes what --trunk-only stores; add --trunk-only or drop it"
        )
    splits = (
        [name.strip() for name in args.split.split(",") if name.strip()] if args.split else [None]
    )
    records = [record for split in splits for record in load_records(args.data, split=split)]
    config = EncoderConfig(
        name=args.encoder,
        weights_path=args.encoder_weights,
        layer=args.layer,
        image_size=args.image_size,
        fine_tune_blocks=args.fine_tune_blocks,
    )
    encoder = build_encoder(config)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    report = build_feature_cache(
        records,
        encoder,
        args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=device,
        trunk_only=args.trunk_only,
        progress=not args.no_progress,
        mirrored=args.mirror,
    )
    print(report.summary())
    for reason in report.bad_images.values():
        print(f"captioner: skipped {reason}", file=sys.stderr)
    return 0
