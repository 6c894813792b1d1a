"""Time building the full scenes dataset (23,000 images) and record it in results/scenes.md.

Usage: .venv/bin/python benchmarks/scenes_build.py [--workers 2] [--out DIR] [--keep]

Builds into a temporary folder (removed afterwards unless --keep or --out), measures wall time,
checks the result reads back with the COCO reader, and writes benchmarks/results/scenes.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from captioner.data.readers import load_records
from captioner.data.scenes import DEFAULT_SIZES, build_scenes

RESULTS = Path(__file__).resolve().parent / "results" / "scenes.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="build here and keep it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary build")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="scenes_bench_")) / "scenes"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    build_scenes(out, seed=args.seed, sizes=DEFAULT_SIZES, workers=args.workers)
    seconds = time.perf_counter() - started
    # CPU time of this process and its workers: unlike wall time, hardly affected by other jobs.
    cpu_seconds = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    records = load_records(out)
    images = sum(DEFAULT_SIZES.values())
    assert len(records) == images, (len(records), images)
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6

    header = (
        "# Building the scenes dataset\n\n"
        "Command: `.venv/bin/python benchmarks/scenes_build.py --workers 2` (one row per run, "
        "appended). The cores are shared with other jobs: the load average at the start says how "
        "busy they were, and CPU time (this process and its workers) is the contention-free cost.\n\n"
        "| date (UTC) | images | workers | wall time | images/s | CPU time | load average | size on disk | machine |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} | {images} | {args.workers} | {seconds:.1f} s "
        f"| {images / seconds:.0f} | {cpu_seconds:.1f} s | {load_before:.2f} | {size_mb:.1f} MB "
        f"| {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()} |\n"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    RESULTS.write_text((existing if existing.startswith(header) else header) + row, encoding="utf-8")
    print(f"built {images} images in {seconds:.1f} s, {cpu_seconds:.1f} CPU s ({size_mb:.1f} MB) -> {RESULTS}")
    if args.out is None and not args.keep:
        shutil.rmtree(out.parent)
    else:
        print(f"kept {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
