"""Flickr8k training runs on a lent GPU: the recipe, its variants and self-critical fine-tuning.

Usage (on the GPU machine, from the repository root; see benchmarks/gpu_flickr8k.sh):
    python3 benchmarks/gpu_flickr8k_runs.py --data /tmp/f8k --out $OUT --budget-s 420

Caches the Lite0 features of the train and dev images once, then runs ``captioner train`` for each
entry of RUNS in order, each exactly as a user would (same CLI, same recipes, ``--set`` overrides),
as long as the time budget leaves room for it. After every run it rewrites ``summary.json`` (each
run's command, seconds and per-epoch history). At the end it exports the best cross-entropy and
the best self-critical run (``captioner export``, fp16) as tar.gz files cut into 15 MB pieces, so
that they fit the machine's way back (join with ``cat model_NAME.tar.gz.part-* | tar xz``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    name: str
    recipe: str
    settings: list[str] = field(default_factory=list)
    init_from: str | None = None
    """Name of an earlier run whose best weights this one starts from."""
    kind: str = "cross_entropy"


RUNS = [
    Run("ce", "flickr8k_lite0"),
    Run("scst", "flickr8k_lite0_scst", ["optim.epochs=10", "optim.early_stopping_patience=3"], init_from="ce",
        kind="self_critical"),
    Run("ce_scheduled_sampling", "flickr8k_lite0",
        ["optim.scheduled_sampling_max=0.25", "optim.scheduled_sampling_increase=0.1"]),
    Run("scst_greedy_baseline", "flickr8k_lite0_scst",
        ["optim.epochs=10", "optim.early_stopping_patience=3", "scst.baseline=greedy"], init_from="ce",
        kind="self_critical"),
    Run("ce_dropout_0.3", "flickr8k_lite0", ["decoder.dropout=0.3"]),
    Run("ce_no_attention_penalty", "flickr8k_lite0", ["optim.attention_regularization=0.0"]),
    Run("scst_lr_5e-5", "flickr8k_lite0_scst",
        ["optim.epochs=10", "optim.early_stopping_patience=3", "optim.learning_rate=5e-5"], init_from="ce",
        kind="self_critical"),
    Run("ce_hidden_1024", "flickr8k_lite0", ["decoder.hidden_dim=1024"]),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def captioner(*args: str, timeout: float) -> tuple[int, float]:
    started = time.time()
    try:
        status = subprocess.run([sys.executable, "-m", "captioner", *args], timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        status = 124
    return status, time.time() - started


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a Flickr8k folder (Flickr8k.token.txt, split lists, images/)")
    parser.add_argument("--out", required=True, help="folder for summary.json and the exported models")
    parser.add_argument("--work", default="/tmp/f8k_work", help="feature cache and run directories")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no run that would end after this")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", default=",".join(r.name for r in RUNS), help="comma-separated subset, in order")
    parser.add_argument("--extra", action="append", default=[], help="more --set values for every run (smoke tests)")
    args = parser.parse_args()
    started = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "features"
    summary: dict = {"data": args.data, "device": args.device, "runs": {}}
    try:
        import torch

        summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        summary["torch"] = torch.__version__
    except Exception as error:  # the summary is still worth writing
        summary["gpu"] = f"unknown ({error})"

    def save_summary() -> None:
        summary["elapsed_s"] = round(time.time() - started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    if not (cache / "index.json").exists():
        log("caching features")
        status, seconds = captioner(
            "features", "--data", args.data, "--split", "train,dev", "--out", str(cache), "--batch-size", "64",
            "--workers", str(args.workers), "--device", args.device, "--no-progress", timeout=args.budget_s,
        )
        summary["features"] = {"status": status, "seconds": round(seconds, 1)}
        save_summary()
        log(f"features: status {status} in {seconds:.0f} s")
        if status != 0:
            return status

    wanted = args.runs.split(",")
    seconds_of_kind: dict[str, float] = {}
    for run in [r for r in RUNS if r.name in wanted]:
        elapsed = time.time() - started
        expected = seconds_of_kind.get(run.kind, 110.0)
        if elapsed + expected > args.budget_s:
            summary["runs"][run.name] = {"skipped": f"{expected:.0f} s expected, {args.budget_s - elapsed:.0f} s left"}
            log(f"skip {run.name}: {expected:.0f} s expected, {args.budget_s - elapsed:.0f} s left")
            continue
        if run.init_from and summary["runs"].get(run.init_from, {}).get("status") != 0:
            summary["runs"][run.name] = {"skipped": f"{run.init_from} did not finish"}
            continue
        run_dir = work / "runs" / run.name
        settings = [f"data.feature_cache={cache}", f"data.num_workers={args.workers}", "threads=0",
                    "mixed_precision=false", *run.settings, *args.extra]
        if run.init_from:
            settings.append(f"init_from={work / 'runs' / run.init_from}")
        command = ["train", "--config", run.recipe, "--data", args.data, "--out", str(run_dir),
                   "--device", args.device, "--quiet"]
        for setting in settings:
            command += ["--set", setting]
        log(f"run {run.name}: captioner {' '.join(command)}")
        status, seconds = captioner(*command, timeout=max(30.0, args.budget_s - elapsed + 60))
        seconds_of_kind[run.kind] = seconds
        history = read_history(run_dir)
        metrics_path = run_dir / "metrics.json"
        summary["runs"][run.name] = {
            "status": status,
            "seconds": round(seconds, 1),
            "recipe": run.recipe,
            "settings": run.settings,
            "init_from": run.init_from,
            "best": json.loads(metrics_path.read_text()) if metrics_path.exists() else None,
            "history": [{k: v for k, v in entry.items() if k != "val_examples"} | {"example": (entry.get("val_examples") or [""])[0]}
                        for entry in history],
        }
        save_summary()
        best = summary["runs"][run.name]["best"] or {}
        log(f"run {run.name}: status {status} in {seconds:.0f} s, best epoch {best.get('epoch')} CIDEr {best.get('CIDEr')}")

    for kind in ("cross_entropy", "self_critical"):
        finished = [(info["best"]["CIDEr"], name) for name, info in summary["runs"].items()
                    if info.get("best") and next(r.kind for r in RUNS if r.name == name) == kind]
        if not finished:
            continue
        score, name = max(finished)
        export_dir = work / f"export_{name}"
        status, _ = captioner("export", "--checkpoint", str(work / "runs" / name), "--out", str(export_dir), timeout=120)
        if status != 0:
            log(f"export of {name} failed ({status})")
            continue
        archive = work / f"model_{name}.tar.gz"
        subprocess.run(["tar", "czf", str(archive), "-C", str(work), export_dir.name], check=True)
        subprocess.run(["split", "-b", "15M", str(archive), str(out / f"model_{name}.tar.gz.part-")], check=True)
        summary.setdefault("exported", {})[kind] = {"run": name, "CIDEr": score}
        log(f"exported {name} (dev CIDEr-D {score:.4f})")
    save_summary()
    log(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
