"""Wall time of ``captioner caption PHOTO`` as a user runs it: start-up, model load, one photo.

Usage: .venv/bin/python benchmarks/cli_startup.py [--photo FILE] [--runs 5] [--source-tree DIR]

Runs ``python -m captioner caption PHOTO`` (the shipped model, its default settings) ``--runs``
times in fresh processes and prints each wall time and the median; each run also reports which
heavy modules it imported. ``--source-tree`` runs another checkout's ``src`` (e.g. a git worktree
of an older commit) with this interpreter, for a before/after comparison; give both in
alternation, as the VM's speed drifts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['captioner', 'caption', sys.argv[1]]\n"
    "try:\n"
    "    runpy.run_module('captioner', run_name='__main__')\n"
    "finally:\n"
    "    print('imported:', sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules), file=sys.stderr)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(ROOT / "examples" / "photos" / "dog_german_shepherd.jpg"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source-tree", default=None, help="a checkout whose src/ to run instead of this one's")
    args = parser.parse_args()
    print(describe_machine())
    environment = dict(os.environ)
    if args.source_tree:
        environment["PYTHONPATH"] = str(Path(args.source_tree).resolve() / "src")
    times = []
    for run in range(args.runs):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", PROBE, args.photo], capture_output=True, text=True,
                                env=environment, cwd=args.source_tree or ROOT)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        imported = [line for line in result.stderr.splitlines() if line.startswith("imported:")]
        print(f"run {run + 1}: {times[-1]:.2f} s  {result.stdout.strip()}  ({imported[-1] if imported else ''})")
    print(f"median of {args.runs}: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
