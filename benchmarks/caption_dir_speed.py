"""Images per second of ``captioner caption-dir`` with the shipped model, by batch size.

Usage: .venv/bin/python benchmarks/caption_dir_speed.py [--images 200] [--runs 1:1,8:1,32:1,32:0]
       [--checkpoint RUN_DIR] [--photos DIR] [--threads 2] [--precision fp32|bf16|int8]

``--runs``: batch size:loader threads pairs (0 threads: decode in the main thread, no overlap).

The photos: the first N Flickr8k dev images from ../shared/datasets/flickr8k (224x224 JPEGs)
when present, else the example photos repeated; linked into a temporary folder. Each setting
runs the real command (``captioner caption-dir ... --json``) in this process on a fresh
results file, after one warm-up run; images/s is the command's own figure (first image loaded
to last record written, model loading excluded). Writes benchmarks/results/caption_dir_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.cli import main as captioner_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = ROOT.parent / "shared" / "datasets" / "flickr8k"


def photo_sources(count: int, photos: Path | None) -> tuple[list[Path], str]:
    if photos is not None:
        found = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        return (found * (count // max(len(found), 1) + 1))[:count], str(photos)
    dev_list = FLICKR8K / "Flickr_8k.devImages.txt"
    if dev_list.is_file():
        names = [line.strip() for line in dev_list.read_text().splitlines() if line.strip()][:count]
        return [FLICKR8K / "images" / name for name in names], f"Flickr8k dev, first {len(names)} (224x224 JPEG)"
    examples = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
    return (examples * (count // len(examples) + 1))[:count], "examples/photos repeated"


def run_once(folder: Path, out: Path, checkpoint: str | None, batch_size: int, workers: int, precision: str | None) -> dict:
    command = ["caption-dir", str(folder), "--out", str(out), "--batch-size", str(batch_size),
               "--workers", str(workers), "--json", "--no-progress", *(["--precision", precision] if precision else [])]
    if checkpoint:
        command += ["--checkpoint", checkpoint]
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = captioner_main(command)
    wall = time.perf_counter() - started
    summary = json.loads(stdout.getvalue())
    if status != 0:
        raise SystemExit(f"caption-dir failed ({status}): {stderr.getvalue()}")
    return {"batch_size": batch_size, "workers": workers, "images": summary["captioned"],
            "images_per_second": summary["images_per_second"],
            "captioning_seconds": summary["captioning_seconds"], "command_seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--runs", default="1:1,8:1,32:1,32:0", help="batch_size:loader_threads pairs")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--photos", type=Path, default=None, help="default: Flickr8k dev, else examples/photos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None, help="default: the model's own")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "caption_dir_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = describe_machine()
    print(machine)
    sources, described = photo_sources(args.images, args.photos)
    runs = []
    with tempfile.TemporaryDirectory(prefix="caption_dir_speed_") as temporary:
        folder = Path(temporary) / "photos"
        folder.mkdir()
        for index, source in enumerate(sources):
            os.symlink(source.resolve(), folder / f"{index:05d}_{source.name}")
        warm = Path(temporary) / "warm"
        warm.mkdir()
        for index, source in enumerate(sources[:16]):  # the example photos repeat: number them
            os.symlink(source.resolve(), warm / f"{index:05d}_{source.name}")
        run_once(warm, Path(temporary) / "warm.jsonl", args.checkpoint, 8, 1, args.precision)
        for setting in args.runs.split(","):
            batch_size, workers = (int(v) for v in setting.split(":"))
            out = Path(temporary) / f"b{batch_size}_w{workers}.jsonl"
            load_before = os.getloadavg()[0]
            result = run_once(folder, out, args.checkpoint, batch_size, workers, args.precision)
            result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            runs.append(result)
            print(f"batch {batch_size:>3}, loader threads {workers}: {result['images_per_second']:.2f} images/s "
                  f"({result['images']} images in {result['captioning_seconds']:.1f} s; "
                  f"load average {result['load_average'][0]} -> {result['load_average'][1]})", flush=True)
    report = {"machine": machine, "photos": described, "checkpoint": args.checkpoint or "shipped flickr8k-lite0",
              "beam_size": 3, "precision": args.precision, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
