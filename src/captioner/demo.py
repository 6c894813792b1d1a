"""The main job: show what the system does, end to end, on any machine, offline.

1. Caption the example photos with the model shipped in the package, and draw their attention.
2. Build the built-in ``scenes`` dataset, train the small captioner on it, evaluate it on the test
   split (COCO metrics and grounded precision) and on ``test-novel``, caption a few test images
   and draw an attention figure.

Everything lands under one output directory, and a summary is printed (or written as JSON).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from captioner.data.images import IMAGE_EXTENSIONS
from captioner.errors import CaptionerError

log = logging.getLogger(__name__)


def caption_example_photos(photos_dir: Path, out_dir: Path, beam_size: int = 3) -> list[dict[str, Any]]:
    """Caption every photo in ``photos_dir`` with the shipped model; one figure per photo."""
    from captioner.api import Captioner
    from captioner.data.images import load_rgb_image
    from captioner.visualization import plot_attention

    photos = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        return []
    captioner = Captioner.from_pretrained()
    results = captioner.caption(photos, beam_size=beam_size)
    summary = []
    for result in results:
        entry = result.to_dict()
        if result.ok:
            figure = out_dir / f"{Path(result.source).stem}_attention.png"
            plot_attention(load_rgb_image(result.source), result.words, result.attention, figure, title=result.caption)
            entry["figure"] = str(figure)
        summary.append(entry)
    return summary


def run_scenes(out_dir: Path, epochs: int | None = None, train_size: int = 20000, progress: bool = True) -> dict[str, Any]:
    """Build scenes, train the small model, evaluate it and draw one attention figure."""
    from captioner.api import Captioner
    from captioner.data.images import load_rgb_image
    from captioner.data.readers import load_records
    from captioner.data.scenes.generator import build_scenes
    from captioner.recipes import recipe_path
    from captioner.training.config import RunConfig
    from captioner.training.loop import train
    from captioner.visualization import plot_attention

    data_dir = out_dir / "scenes"
    sizes = {"train": train_size, "val": 1000, "test": 1000, "test-novel": 1000}
    started = time.time()
    build_scenes(data_dir, seed=0, sizes=sizes, progress=progress)
    build_seconds = time.time() - started

    config = RunConfig.load(recipe_path("scenes_small_cnn"))
    config.data.path = str(data_dir)
    if epochs is not None:
        config.optim.epochs = epochs
    run_dir = out_dir / "scenes_run"
    result = train(config, run_dir, progress=progress)

    captioner = Captioner.from_pretrained(run_dir)
    evaluations = {split: evaluate_split(captioner, str(data_dir), split, progress) for split in ("test", "test-novel")}

    examples = load_records(data_dir, split="test")[:4]
    captions = captioner.caption([r.image_path for r in examples], beam_size=3)
    figure = plot_attention(
        load_rgb_image(examples[0].image_path), captions[0].words, captions[0].attention,
        out_dir / "scenes_attention.png", title=captions[0].caption,
    )
    return {
        "dataset": str(data_dir),
        "build_seconds": round(build_seconds, 1),
        "run_dir": str(run_dir),
        "train_minutes": round(result.seconds / 60, 1),
        "epochs": result.epochs_run,
        "validation": result.best_metrics,
        "evaluation": evaluations,
        "examples": [
            {"image": str(r.image_path), "caption": c.caption, "reference": r.captions[0]}
            for r, c in zip(examples, captions)
        ],
        "figure": str(figure),
    }


def evaluate_split(captioner, data: str, split: str, progress: bool = True) -> dict[str, Any]:
    evaluation = captioner.evaluate(data, split=split, beam_size=3, batch_size=250, meteor=False, progress=progress)
    return {"images": len(evaluation.predictions),
            **{name: evaluation.metrics[name] for name in ("BLEU-4", "CIDEr", "grounded_precision")}}


def run_demo(out_dir: Path, photos_dir: Path | None, epochs: int | None = None, train_size: int = 20000,
             progress: bool = True) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"out_dir": str(out_dir)}
    if photos_dir is not None and photos_dir.is_dir():
        try:
            summary["photos"] = caption_example_photos(photos_dir, out_dir / "photos")
        except CaptionerError as error:
            # No shipped model in this build: the scenes part still shows the whole pipeline.
            log.warning("skipping the example photos: %s", error)
    summary["scenes"] = run_scenes(out_dir, epochs=epochs, train_size=train_size, progress=progress)
    return summary


__all__ = ["caption_example_photos", "evaluate_split", "run_demo", "run_scenes"]
