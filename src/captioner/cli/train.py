"""``captioner train``: fit a captioner; flags map onto the RunConfig's fields."""

from __future__ import annotations

import argparse

from captioner.cli._common import print_json, sigterm_as_ctrl_c


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a captioner on a dataset",
        description="Train a Show, Attend and Tell captioner. Settings come from --config (a JSON "
        "recipe, see configs/), then the flags, then --set overrides; the full config is saved as "
        "RUN_DIR/config.json beside the weights. A recipe of several stages (flickr8k_lite0_shipped: "
        "features, cross-entropy, self-critical; flickr8k_ensemble: two encoders' runs and their "
        "ensemble) makes each into OUT/STAGE/ in order, with these settings applied to every "
        "training stage.",
    )
    parser.add_argument("--config", help="JSON recipe: a file, or a shipped recipe name (scenes_small_cnn, flickr8k_lite0; "
                        "flickr8k_lite0_shipped and flickr8k_ensemble run the shipped models' stages in order)")
    parser.add_argument("--data", help="dataset directory or annotation file")
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--encoder", help="encoder name: efficientnet_lite0, efficientnet_lite2, small_cnn, resnet50, ...")
    parser.add_argument("--encoder-layer", help="which encoder stage gives the region grid")
    parser.add_argument("--encoder-weights", help="state dict of a torchvision backbone's pretrained weights")
    parser.add_argument("--fine-tune-encoder", type=int, metavar="BLOCKS", help="unfreeze the encoder's last BLOCKS blocks")
    parser.add_argument("--feature-cache", help="cached features from `captioner features` (frozen encoder)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate of the decoder")
    parser.add_argument("--beam-size", type=int, help="beam size used for validation")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other setting, e.g. --set optim.attention_regularization=0.5")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    parser.add_argument("--json", action="store_true", help="print the final result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="a recipe of several stages: run up to N independent stages at once, each in its own "
                             "process with 1/N of the threads (default: the recipe's \"parallel\", else 1)")
    parser.set_defaults(run=run)


FLAG_FIELDS = {
    "data": "data.path",
    "encoder": "encoder.name",
    "encoder_layer": "encoder.layer",
    "encoder_weights": "encoder.weights_path",
    "fine_tune_encoder": "encoder.fine_tune_blocks",
    "feature_cache": "data.feature_cache",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.learning_rate",
    "beam_size": "eval.beam_size",
    "seed": "seed",
    "workers": "data.num_workers",
    "device": "device",
}


def setting_assignments(args: argparse.Namespace) -> list[str]:
    """The flags and ``--set`` as ``section.field=value`` assignments, in the order they apply."""
    import json

    flags = [
        f"{field}={json.dumps(getattr(args, flag))}"
        for flag, field in FLAG_FIELDS.items()
        if getattr(args, flag) is not None
    ]
    return flags + args.set


def config_from_args(args: argparse.Namespace):
    import json
    from pathlib import Path

    from captioner.errors import ConfigError
    from captioner.recipes import recipe_path
    from captioner.training.config import RunConfig, apply_overrides

    if args.config:
        values = RunConfig.load(recipe_path(args.config)).to_dict()
    elif args.resume and (Path(args.out) / "config.json").is_file():
        values = json.loads((Path(args.out) / "config.json").read_text())
    else:
        values = RunConfig().to_dict()
    apply_overrides(values, setting_assignments(args))
    config = RunConfig.from_dict(values, source="command line")
    if not config.data.path:
        raise ConfigError("no dataset: pass --data PATH or a --config that sets data.path")
    return config


def run(args: argparse.Namespace) -> int:
    with sigterm_as_ctrl_c():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from captioner.training.loop import train

    pipeline = pipeline_from_args(args)
    if pipeline is not None:
        return run_stages(args, *pipeline)
    config = config_from_args(args)
    result = train(config, args.out, resume=args.resume, progress=not args.quiet)
    summary = {
        "run_dir": str(result.run_dir),
        "epochs": result.epochs_run,
        "seconds": round(result.seconds, 1),
        "best": result.best_metrics,
    }
    if args.json:
        print_json(summary)
    else:
        best = result.best_metrics
        print(f"trained {result.epochs_run} epochs in {result.seconds / 60:.1f} min -> {result.run_dir}")
        print(f"best epoch {best.get('epoch')}: {format_scores(best)}")
    return 0


def format_scores(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def pipeline_from_args(args: argparse.Namespace):
    """(recipe, settings) where --config names a recipe of several stages, or where --resume
    continues one in --out; else None."""
    import dataclasses
    from pathlib import Path

    from captioner.errors import ConfigError
    from captioner.training.checkpoint import PIPELINE_FILE
    from captioner.training.pipeline import load_pipeline_recipe, read_state

    settings = setting_assignments(args)
    if args.config:
        recipe = load_pipeline_recipe(args.config)
        if recipe is None:
            if args.parallel is not None:
                raise ConfigError(f"--parallel runs the stages of a recipe of several stages side by side; {args.config} has one")
            return None
    elif args.resume and (Path(args.out) / PIPELINE_FILE).is_file():
        recipe, saved_settings, _ = read_state(args.out)
        settings = settings or saved_settings
    else:
        return None
    if args.parallel is not None:
        if args.parallel < 1:
            raise ConfigError(f"--parallel must be 1 or more, got {args.parallel}")
        recipe = dataclasses.replace(recipe, parallel=args.parallel)
    return recipe, settings


def run_stages(args: argparse.Namespace, recipe, settings: list[str]) -> int:
    """Run a recipe of several stages (``captioner.training.pipeline``) into --out."""
    import sys

    from captioner.training.pipeline import run_pipeline

    def announce(stage, config) -> None:
        if stage.kind == "train":
            start = f" from {config.init_from}" if stage.init_from else ""
            line = f"stage {stage.name}: recipe {stage.recipe}{start}"
        else:
            line = f"stage {stage.name}: {stage.kind} of {', '.join(stage.sources)}"
        print(f"{line} -> {args.out}/{stage.name}", file=sys.stderr, flush=True)

    def report(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    result = run_pipeline(recipe, args.out, settings, resume=args.resume, progress=not args.quiet, on_stage=announce,
                          evaluate=_ensemble_scorer(args), report=report)  # fmt: skip
    final_dir = f"{args.out}/{recipe.stages[-1].name}"
    if args.json:
        print_json({"out": str(result.out), "final": final_dir, "stages": result.stages})
        return 0
    for name, stage in result.stages.items():
        kind = stage.get("kind", "train")
        what = f"{stage['epochs']} epochs" if kind == "train" else kind
        best = stage.get("best") or {}
        at = f"best epoch {best.get('epoch')}: " if kind == "train" else "validation: " if best else ""
        print(f"{name}: {what} in {stage['seconds'] / 60:.1f} min{', ' + at if at else ''}{format_scores(best)}")
    print(f"model: {final_dir} (--checkpoint {args.out} loads it too)")
    return 0


def _ensemble_scorer(args: argparse.Namespace):
    """Scores an ensemble stage as `captioner evaluate` would on its validation split: captioned
    from the photos (its members read different CNNs' grids, and its mirror average flips the
    photo), decoder alone, as training validates."""

    def score(ensemble_dir, config) -> dict:
        from captioner.api import Captioner

        captioner = Captioner.from_pretrained(ensemble_dir, device=args.device or config.device)
        evaluation = captioner.evaluate(
            config.data.path, split=config.data.val_split, beam_size=config.eval.beam_size,
            limit=config.eval.max_images, batch_size=config.eval.batch_size, meteor=False,
            progress=not args.quiet, guidance=False,
        )  # fmt: skip
        scores = {k: v for k, v in evaluation.metrics.items() if isinstance(v, float)}
        return {"split": config.data.val_split, "images": len(evaluation.predictions), "from": "photos", **scores}

    return score
