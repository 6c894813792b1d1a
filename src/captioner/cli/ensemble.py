"""``captioner ensemble``: several trained runs exported side by side to caption as one model."""

from __future__ import annotations

import argparse

from captioner.cli._common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="export several runs as one model that mixes their next-word probabilities",
        description="Export each run (as `captioner export` does) into OUT/members/N and write OUT/ensemble.json "
        "with their weights. `captioner caption`, `caption-dir`, `evaluate`, `attend` and `serve` take OUT as a "
        "checkpoint: every word is chosen from the weighted mixture of the members' next-word probabilities, and "
        "its attention map is their weighted mean. Runs must share the vocabulary, the input size and the grid; "
        "runs with different encoders (e.g. efficientnet_lite0 and efficientnet_lite2) run both CNNs on each photo. "
        "Decoding and guidance settings are the first run's, except those given with --set.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run or export directories")
    parser.add_argument("--out", required=True, help="directory to write the ensemble to")
    parser.add_argument("--weights", help="comma-separated mixture weights, one per run (default: equal)")
    parser.add_argument("--int8", action="store_true",
                        help="store the members' large matrices as int8 (about half the size of fp16)")
    parser.add_argument("--set", action="append", default=[], metavar="eval.FIELD=VALUE",
                        help="decoding or guidance setting of the ensemble, e.g. eval.guidance_trust=0.7 (repeatable)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.errors import ConfigError
    from captioner.training.config import apply_overrides
    from captioner.training.ensemble import make_ensemble

    weights = None
    if args.weights:
        try:
            weights = [float(value) for value in args.weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights {args.weights!r}: give comma-separated numbers, e.g. 0.5,0.5") from None
    settings: dict = {}
    apply_overrides(settings, args.set)
    if set(settings) - {"eval"}:
        raise ConfigError(f"--set takes eval.FIELD=VALUE only (an ensemble's members keep their own training "
                          f"settings), got {', '.join(sorted(set(settings) - {'eval'}))}")
    ensemble = make_ensemble(args.runs, args.out, weights, int8=args.int8, eval_settings=settings.get("eval"))
    if args.json:
        print_json({"out": args.out, "members": [str(p) for p in ensemble.members], "weights": ensemble.weights})
        return 0
    print(f"ensemble of {len(ensemble.members)} runs -> {args.out}")
    for source, weight in zip(args.runs, ensemble.weights):
        print(f"  {weight:.3f}  {source}")
    return 0
