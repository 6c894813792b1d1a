"""Build the scenes dataset: procedural pictures of coloured shapes with true captions.

Owns: sampling scenes, drawing them with Pillow, choosing the held-out colour+shape pairs of
``test-novel``, and writing the COCO-format folder (images, captions, ground truth, README).
Every picture is drawn from its own RNG seeded by ``(seed, split, index)``, so the files are
byte-identical for a seed whatever the number of worker processes.
Must not know about tensors, encoders, models or metrics.
"""

from __future__ import annotations

import functools
import itertools
import json
import multiprocessing
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from captioner.data.scenes.captions import CAPTIONS_PER_IMAGE, true_captions
from captioner.data.scenes.truth import (
    BACKGROUND,
    COLOURS,
    GRID,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SceneObject,
    SceneTruth,
    scenes_file,
)
from captioner.errors import DatasetFormatError

SPLITS: tuple[str, ...] = ("train", "val", "test", "test-novel")
DEFAULT_SIZES: dict[str, int] = {"train": 20000, "val": 1000, "test": 1000, "test-novel": 1000}
HELD_OUT_PAIRS = 5  # of the 48 colour+shape pairs, about 10%
SUPERSAMPLE = 4  # draw 4x larger and box-downsample: anti-aliased edges, deterministic
MIN_IMAGE_SIZE = 24
_REPEAT_PROBABILITY = 0.3  # chance that a further object copies an earlier colour+shape (counting)
_LARGE_RADIUS, _SMALL_RADIUS = 0.38, 0.24  # of a grid cell
_JITTER = 0.08  # of a grid cell, so that a large object never leaves its cell

Pair = tuple[str, str]  # (colour, shape)


def _stream(seed: int, *names: str | int) -> np.random.Generator:
    """An RNG that depends only on ``seed`` and the names, never on the process drawing."""
    keys = [zlib.crc32(n.encode()) if isinstance(n, str) else n for n in names]
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def held_out_pairs(seed: int) -> list[Pair]:
    """The colour+shape pairs never seen in training: distinct colours and distinct shapes, so
    that every held-out colour and shape is still seen in training with other partners."""
    rng = _stream(seed, "held-out-pairs")
    colours = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))[:HELD_OUT_PAIRS]]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:HELD_OUT_PAIRS]]
    return sorted(zip(colours, shapes))


@functools.lru_cache(maxsize=8)
def allowed_pairs(seed: int, split: str) -> tuple[Pair, ...]:
    held_out = set(held_out_pairs(seed))
    every = [(c, s) for c in COLOURS for s in SHAPES]
    if split == "test-novel":
        return tuple(p for p in every if p in held_out)
    return tuple(p for p in every if p not in held_out)


def sample_scene(rng: np.random.Generator, pairs: tuple[Pair, ...], image_id: int,
                 file_name: str = "") -> SceneTruth:
    """1-4 objects in distinct cells; some repeat an earlier colour+shape so counts occur."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    chosen: list[Pair] = []
    objects = []
    for cell in cells:
        if chosen and rng.random() < _REPEAT_PROBABILITY:
            pair = chosen[int(rng.integers(len(chosen)))]
        else:
            pair = pairs[int(rng.integers(len(pairs)))]
        chosen.append(pair)
        row, col = divmod(int(cell), GRID)
        size = SIZES[int(rng.integers(len(SIZES)))]
        objects.append(SceneObject(row=row, col=col, shape=pair[1], colour=pair[0], size=size))
    return SceneTruth(image_id=image_id, objects=tuple(sorted(objects)), file_name=file_name)


def _polygon(cx: float, cy: float, radius: float, angles_and_scales: list[tuple[float, float]]):
    return [(cx + radius * s * np.cos(a), cy + radius * s * np.sin(a)) for a, s in angles_and_scales]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.82
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        up = -np.pi / 2
        points = _polygon(cx, cy + r * 0.15, r * 1.1, [(up + k * 2 * np.pi / 3, 1.0) for k in range(3)])
        draw.polygon(points, fill=fill)
    elif shape == "star":
        up = -np.pi / 2
        points = _polygon(cx, cy + r * 0.05, r * 1.1,
                          [(up + k * np.pi / 5, 1.0 if k % 2 == 0 else 0.45) for k in range(10)])
        draw.polygon(points, fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "cross":
        t = r * 0.34
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_scene(scene: SceneTruth, rng: np.random.Generator, image_size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB picture of ``image_size`` pixels square."""
    canvas_size = image_size * SUPERSAMPLE
    cell = canvas_size / GRID
    canvas = Image.new("RGB", (canvas_size, canvas_size), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        jitter_x, jitter_y = rng.uniform(-_JITTER, _JITTER, size=2) * cell
        cx = (obj.col + 0.5) * cell + jitter_x
        cy = (obj.row + 0.5) * cell + jitter_y
        radius = (_LARGE_RADIUS if obj.size == "large" else _SMALL_RADIUS) * cell
        _draw_shape(draw, obj.shape, cx, cy, radius, COLOURS[obj.colour])
    return canvas.resize((image_size, image_size), Image.Resampling.BOX)


def make_example(seed: int, split: str, index: int, image_id: int,
                 image_size: int = 64) -> tuple[SceneTruth, list[str], Image.Image]:
    """Scene, captions and picture of one example, from ``(seed, split, index)`` alone."""
    rng = _stream(seed, split, index)
    scene = sample_scene(rng, allowed_pairs(seed, split), image_id, f"{image_id}.png")
    captions = true_captions(scene, rng)
    return scene, captions, draw_scene(scene, rng, image_size)


def _render_job(job: tuple[str, int, int], out_dir: str, seed: int,
                image_size: int) -> tuple[str, int, dict[str, Any], list[str]]:
    split, index, image_id = job
    scene, captions, picture = make_example(seed, split, index, image_id, image_size)
    picture.save(Path(out_dir) / "images" / split / scene.file_name, format="PNG")
    return split, index, scene.to_dict(), captions


def _prepare_output(out_dir: Path) -> None:
    """Refuse to write into a folder holding anything but an earlier scenes build."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetFormatError(f"{out_dir} is a file; choose a folder for the scenes dataset")
    if out_dir.is_dir():
        entries = {p.name for p in out_dir.iterdir()}
        ours = {"images", "annotations", "README.md"}
        earlier_build = bool(list((out_dir / "annotations").glob("scenes_*.json")))
        if entries and not (entries <= ours and earlier_build):
            raise DatasetFormatError(
                f"{out_dir} is not empty and holds no earlier scenes build; "
                "choose an empty or new folder"
            )
        for name in ("images", "annotations"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _coco_captions(split: str, scenes: list[dict[str, Any]], captions: list[list[str]],
                   image_size: int) -> dict[str, Any]:
    return {
        "info": {"description": f"captioner scenes dataset, split {split}"},
        "licenses": [],
        "type": "captions",
        "images": [
            {"id": s["image_id"], "file_name": s["file_name"], "width": image_size, "height": image_size}
            for s in scenes
        ],
        "annotations": [
            {"id": s["image_id"] * 10 + k, "image_id": s["image_id"], "caption": caption}
            for s, texts in zip(scenes, captions)
            for k, caption in enumerate(texts)
        ],
    }


def _readme(seed: int, sizes: Mapping[str, int], image_size: int) -> str:
    held_out = ", ".join(f"{c} {s}" for c, s in held_out_pairs(seed))
    counts = "\n".join(f"| {split} | {sizes[split]} |" for split in SPLITS if sizes.get(split))
    return f"""# scenes: a synthetic captioning dataset built by `captioner data scenes`

Procedural {image_size}x{image_size} RGB pictures of 1 to {MAX_OBJECTS} coloured shapes on a plain
grey background, placed on a {GRID}x{GRID} grid, each with {CAPTIONS_PER_IMAGE} captions that are
all true ("a red circle to the left of a small blue square", "two green triangles", "there are
three shapes", "a large yellow star in the top left corner", ...). Small enough for a tiny CNN
to learn in minutes on a laptop CPU, and every generated caption can be checked against the
ground truth (`captioner.data.scenes.checker.grounded_precision`).

- shapes: {", ".join(SHAPES)}; colours: {", ".join(COLOURS)}; sizes: {", ".join(SIZES)}
- relations: left of / right of (by column), above / below (by row), next to (touching cells)
- seed: {seed} (the same seed and sizes give byte-identical files)
- held out of train, val and test, and used only in `test-novel`: {held_out}

| split | images |
|---|---|
{counts}

## Layout (COCO captions format)

- `images/<split>/<id>.png`
- `annotations/captions_<split>.json`: COCO captions (`images`, `annotations`)
- `annotations/scenes_<split>.json`: ground truth per image: objects (shape, colour, size, grid
  row and column, row 0 = top) and every true relation `[i, relation, j]` between them

No horizontal-flip augmentation may be used on it: flipping makes "left of" captions false.
"""


def build_scenes(
    out_dir: str | Path,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    image_size: int = 64,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Write the scenes dataset to ``out_dir`` and return it.

    ``sizes`` maps split names (``train``, ``val``, ``test``, ``test-novel``) to image counts
    (default: 20,000 / 1,000 / 1,000 / 1,000); a split of size 0 is not written. Image ids run
    from 1 across the splits in that order.
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown scenes splits {sorted(unknown)}; known: {', '.join(SPLITS)}")
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must not be negative: {sizes}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    out_dir = Path(out_dir)
    _prepare_output(out_dir)
    (out_dir / "annotations").mkdir()

    jobs: list[tuple[str, int, int]] = []
    next_id = itertools.count(1)
    for split in SPLITS:
        if sizes.get(split, 0):
            (out_dir / "images" / split).mkdir(parents=True)
            jobs.extend((split, index, next(next_id)) for index in range(sizes[split]))

    render = functools.partial(_render_job, out_dir=str(out_dir), seed=seed, image_size=image_size)
    scenes: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    captions: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
    bar = tqdm(total=len(jobs), desc="drawing scenes", unit="img", disable=not progress)
    with bar:
        if workers > 1:
            with multiprocessing.Pool(workers) as pool:
                results = pool.imap(render, jobs, chunksize=64)
                for split, _, scene, texts in results:
                    scenes[split].append(scene)
                    captions[split].append(texts)
                    bar.update()
        else:
            for split, _, scene, texts in map(render, jobs):
                scenes[split].append(scene)
                captions[split].append(texts)
                bar.update()

    pairs_held_out = [list(p) for p in held_out_pairs(seed)]
    for split in SPLITS:
        if not sizes.get(split, 0):
            continue
        _write_json(out_dir / "annotations" / f"captions_{split}.json",
                    _coco_captions(split, scenes[split], captions[split], image_size))
        _write_json(scenes_file(out_dir, split), {
            "split": split,
            "seed": seed,
            "image_size": image_size,
            "grid": GRID,
            "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
            "shapes": list(SHAPES),
            "sizes": list(SIZES),
            "held_out_pairs": pairs_held_out,
            "scenes": scenes[split],
        })
    (out_dir / "README.md").write_text(_readme(seed, sizes, image_size), encoding="utf-8")
    return out_dir
