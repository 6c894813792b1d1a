"""``captioner soup``: average the decoders of runs fine-tuned from the same start (a model soup)."""

from __future__ import annotations

import argparse

from captioner.cli._common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soup",
        help="average the decoders of runs fine-tuned from the same start (greedy model soup)",
        description="Score each run on the first run's validation split (as its training validated), then "
        "add the runs best first to an element-wise weight average, keeping each only if the average "
        "scores higher with it (Wortsman et al.'s greedy soup). Writes the soup as a run directory "
        "that `captioner caption`, `evaluate` and `export` take.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories with the same vocabulary and decoder; the first one's config, "
                        "encoder and validation data are used")
    parser.add_argument("--out", required=True, help="run directory to write the soup to")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-uniform", action="store_true", help="skip scoring the mean of all the runs")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from captioner.training.loop import resolve_device
    from captioner.training.soup import soup_runs

    log = logging.getLogger("captioner.soup")
    result = soup_runs(args.runs, out=args.out, device=resolve_device(args.device), uniform=not args.no_uniform,
                       report=log.info)
    if args.json:
        print_json({
            "out": args.out, "metric": result.metric, "ingredients": result.ingredients, "metrics": result.metrics,
            "alone": result.alone, "uniform": result.uniform,
            "steps": [step.__dict__ for step in result.steps],
        })
        return 0
    best_alone = max(result.alone.values(), key=lambda scores: scores[result.metric])[result.metric]
    print(f"soup of {len(result.ingredients)} of {len(args.runs)} runs -> {args.out}")
    print(f"{result.metric} {result.metrics[result.metric]:.4f} (best run alone {best_alone:.4f}), "
          f"BLEU-4 {result.metrics['BLEU-4']:.4f}")
    for name in result.ingredients:
        print(f"  {name}")
    return 0
