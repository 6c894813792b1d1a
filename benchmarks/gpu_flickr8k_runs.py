"""Flickr8k training runs on a lent GPU: the recipe, its ablations, self-critical variants, fine-tuning.

Usage (on the GPU machine, from the repository root; see benchmarks/gpu_flickr8k.sh):
    python3 benchmarks/gpu_flickr8k_runs.py --data /tmp/f8k --out $OUT --budget-s 520 --parallel 7

Caches the features the wanted runs read, once and side by side (Lite0's 7x7 grid, its 14x14 grid,
the trunk activations that last-block fine-tuning reads, mirrored photos, EfficientNet-Lite2's
grid), then runs ``captioner train``
for the entries of RUNS, each exactly as a user would (same CLI, same recipes, ``--set``
overrides). Several runs share the GPU at once (``--parallel``): one run of this small decoder
leaves the card mostly idle, waiting on Python. A run whose ``init_from`` names another starts
when that one has finished; ``best_ce`` waits for every cross-entropy run and takes the best. At
the budget's end the runs still going are interrupted (SIGINT: the trainer saves and stops) and
recorded as cut, with the epochs they finished. After every change ``summary.json`` is rewritten
(each run's command, seconds and per-epoch history). ``--soup-of`` then makes the greedy soup of
the named runs that finished (benchmarks/weight_soup.py on the GPU). At the end the best self-critical run and the
fine-tuned run (or the best of each ``--export-best-of`` group) are exported (``captioner export``, fp16) as tar.gz files cut into 15 MB pieces, so
that they fit the machine's way back (join with ``cat model_NAME.tar.gz.part-* | tar xz``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCST_LONG = ["optim.epochs=10", "optim.early_stopping_patience=3"]
# SCST with the weight average, all ten epochs (benchmarks/results/scst_ema_seed1_cpu/config.json).
SCST_EMA = ["optim.epochs=10", "optim.early_stopping_patience=0", "optim.weight_average_decay=0.99"]
LITE2 = "encoder.name=efficientnet_lite2"


@dataclass
class Run:
    name: str
    recipe: str
    settings: list[str] = field(default_factory=list)
    init_from: str | None = None
    """Name of an earlier run whose best weights this one starts from (``best_ce``: the best
    cross-entropy run, once they have all ended)."""
    kind: str = "cross_entropy"
    cache: str = "final"
    """Which feature cache it reads: ``final`` (7x7x1280), ``stage5`` (14x14x112), ``trunk``, or
    ``lite2_final`` (EfficientNet-Lite2's 7x7x1280)."""
    mirror_cache: str | None = None
    """A cache of the same photos flipped (``mirror``, ``lite2_mirror``), read with probability
    ``data.mirror_probability``."""


# In order of priority: with --parallel N the first N start together, the others as places free up.
RUNS = [
    Run("ce", "flickr8k_lite0"),
    Run("ce_hidden_1024", "flickr8k_lite0", ["decoder.hidden_dim=1024"]),
    Run("ce_dropout_0.3", "flickr8k_lite0", ["decoder.dropout=0.3"]),
    Run("ce_no_attention_penalty", "flickr8k_lite0", ["optim.attention_regularization=0.0"]),
    Run("ce_grid_14x14", "flickr8k_lite0", ["encoder.layer=stage5"], cache="stage5"),
    Run("ce_constant_lr", "flickr8k_lite0", ["optim.lr_schedule=constant"]),
    Run("scst_lr_5e-5", "flickr8k_lite0_scst",
        ["optim.epochs=16", "optim.early_stopping_patience=4", "optim.learning_rate=5e-5"], init_from="ce",
        kind="self_critical"),
    Run("scst_greedy_baseline", "flickr8k_lite0_scst", [*SCST_LONG, "scst.baseline=greedy"], init_from="ce",
        kind="self_critical"),
    Run("fine_tune_last_block", "flickr8k_lite0",
        ["encoder.fine_tune_blocks=1", "encoder.fine_tune_lr=1e-4", "optim.learning_rate=1e-4", "optim.epochs=4",
         "optim.warmup_steps=0"], init_from="ce", kind="fine_tune", cache="trunk"),
    Run("scst", "flickr8k_lite0_scst", SCST_LONG, init_from="ce", kind="self_critical"),
    Run("scst_from_best_ce", "flickr8k_lite0_scst", SCST_LONG, init_from="best_ce", kind="self_critical"),
    Run("ce_hidden_768", "flickr8k_lite0", ["decoder.hidden_dim=768"]),
    Run("scst_hidden_768_lr_5e-5", "flickr8k_lite0_scst",
        ["optim.epochs=16", "optim.early_stopping_patience=4", "optim.learning_rate=5e-5"],
        init_from="ce_hidden_768", kind="self_critical"),
    Run("scst_hidden_1024", "flickr8k_lite0_scst", [*SCST_LONG, "decoder.hidden_dim=1024"], init_from="ce_hidden_1024",
        kind="self_critical"),
    Run("scst_hidden_1024_lr_5e-5", "flickr8k_lite0_scst",
        ["optim.epochs=16", "optim.early_stopping_patience=4", "optim.learning_rate=5e-5", "decoder.hidden_dim=1024"],
        init_from="ce_hidden_1024", kind="self_critical"),
    Run("ce_scheduled_sampling", "flickr8k_lite0",
        ["optim.scheduled_sampling_max=0.25", "optim.scheduled_sampling_increase=0.1"]),
    # The best CPU recipe (mirrored photos, then SCST with the weight average), with Lite0 as the
    # same-machine control and with the larger EfficientNet-Lite2 encoder.
    Run("ce_mirror", "flickr8k_lite0", [], cache="final", mirror_cache="mirror"),
    Run("ce_lite2_mirror", "flickr8k_lite0", [LITE2], cache="lite2_final", mirror_cache="lite2_mirror"),
    Run("ce_lite2_mirror_seed1", "flickr8k_lite0", [LITE2, "seed=1"], cache="lite2_final",
        mirror_cache="lite2_mirror"),
    Run("scst_ema", "flickr8k_lite0_scst", SCST_EMA, init_from="ce_mirror", kind="self_critical",
        mirror_cache="mirror"),
    Run("scst_ema_lite2", "flickr8k_lite0_scst", [LITE2, *SCST_EMA], init_from="ce_lite2_mirror",
        kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror"),
    Run("scst_ema_lite2_seed1", "flickr8k_lite0_scst", [LITE2, *SCST_EMA, "seed=1"], init_from="ce_lite2_mirror_seed1",
        kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror"),
    Run("scst_ema_lite2_lr_2e-4", "flickr8k_lite0_scst", [LITE2, *SCST_EMA, "optim.learning_rate=2e-4"],
        init_from="ce_lite2_mirror", kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror"),
    Run("scst_ema_lite2_lr_2e-4_14_epochs", "flickr8k_lite0_scst",
        [LITE2, *SCST_EMA, "optim.learning_rate=2e-4", "optim.epochs=14"],
        init_from="ce_lite2_mirror", kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror"),
    Run("scst_ema_lite2_seed1_lr_2e-4", "flickr8k_lite0_scst", [LITE2, *SCST_EMA, "optim.learning_rate=2e-4", "seed=1"],
        init_from="ce_lite2_mirror_seed1", kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror"),
    # Variants of the best Lite2 SCST run (lr 2e-4, from ce_lite2_mirror), for issue 8's +10%:
    # other sampling seeds from the same start, the mixed objective, dropout while sampling, the
    # last cross-entropy epoch as the start. Their greedy soup: --soup-of.
    *(Run(f"scst_lite2_{label}", "flickr8k_lite0_scst", [LITE2, *SCST_EMA, "optim.learning_rate=2e-4", *extra],
          init_from="ce_lite2_mirror", kind="self_critical", cache="lite2_final", mirror_cache="lite2_mirror")
      for label, extra in [
          ("sampling_seed1", ["seed=1"]),
          ("sampling_seed2", ["seed=2"]),
          ("xe_0.1", ["scst.cross_entropy_weight=0.1"]),
          ("xe_0.3", ["scst.cross_entropy_weight=0.3"]),
          ("xe_1.0", ["scst.cross_entropy_weight=1.0"]),
          ("dropout", ["scst.dropout=true"]),
          ("from_last", ["init_weights=last"]),
      ]),
]

CACHES = {
    "final": [],
    "stage5": ["--layer", "stage5"],
    "trunk": ["--trunk-only", "--fine-tune-blocks", "1"],
    "mirror": ["--mirror"],
    "lite2_final": ["--encoder", "efficientnet_lite2"],
    "lite2_mirror": ["--encoder", "efficientnet_lite2", "--mirror"],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_of_history(history: list[dict]) -> dict | None:
    scored = [entry for entry in history if entry.get("epoch") and "val" in entry]
    if not scored:
        return None
    best = max(scored, key=lambda entry: entry["val"]["CIDEr"])
    return {"epoch": best["epoch"], **best["val"]}


def stop(process: subprocess.Popen) -> int:
    """Interrupt like Ctrl-C (the trainer saves and stops), then kill if it lingers."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a Flickr8k folder (Flickr8k.token.txt, split lists, images/)")
    parser.add_argument("--out", required=True, help="folder for summary.json, the run logs and the exported models")
    parser.add_argument("--work", default="/tmp/f8k_work", help="feature caches and run directories")
    parser.add_argument("--budget-s", type=float, default=520.0, help="interrupt what still runs at this time")
    parser.add_argument("--min-start-s", type=float, default=45.0, help="start no run with less time than this left")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=6, help="runs sharing the GPU at once")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("--runs", default=",".join(r.name for r in RUNS), help="comma-separated subset")
    parser.add_argument("--extra", action="append", default=[], help="more --set values for every run (smoke tests)")
    parser.add_argument("--export-best-of", action="append", default=[], metavar="RUN,RUN,...",
                        help="export the best finished run of this group (repeatable; default: the best "
                             "self-critical and the best fine-tuned run)")
    parser.add_argument("--soup-of", metavar="BASE,RUN,...",
                        help="after the runs, the greedy soup of these finished runs' decoders "
                             "(benchmarks/weight_soup.py, validated as BASE validates), exported with the others")
    args = parser.parse_args()
    started = time.time()
    out, work = Path(args.out), Path(args.work)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    wanted = [run for run in RUNS if run.name in args.runs.split(",")]
    summary: dict = {"data": args.data, "device": args.device, "parallel": args.parallel, "runs": {}}
    try:
        import torch

        summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        summary["torch"] = torch.__version__
    except Exception as error:  # the summary is still worth writing
        summary["gpu"] = f"unknown ({error})"

    def save_summary() -> None:
        summary["elapsed_s"] = round(time.time() - started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    def left() -> float:
        return args.budget_s - (time.time() - started)

    # The caches the wanted runs read, encoded side by side.
    encoding = {}
    for name in sorted({run.cache for run in wanted} | {run.mirror_cache for run in wanted if run.mirror_cache}):
        cache = work / f"features_{name}"
        if (cache / "index.json").exists():
            continue
        command = [sys.executable, "-m", "captioner", "features", "--data", args.data, "--split", "train,dev",
                   "--out", str(cache), "--batch-size", "64", "--workers", "4", "--device", args.device,
                   "--no-progress", *CACHES[name]]
        log(f"caching {name}: {' '.join(command[2:])}")
        encoding[name] = (subprocess.Popen(command, stdout=(out / "logs" / f"features_{name}.log").open("w"),
                                           stderr=subprocess.STDOUT), time.time())
    summary["features"] = {}
    for name, (process, began) in encoding.items():
        status = process.wait()
        summary["features"][name] = {"status": status, "seconds": round(time.time() - began, 1)}
        log(f"features {name}: status {status} in {time.time() - began:.0f} s")
    save_summary()

    pending = list(wanted)
    active: dict[str, tuple[subprocess.Popen, float, Run]] = {}

    def record(run: Run, status: int, seconds: float, cut: bool) -> None:
        run_dir = work / "runs" / run.name
        history = read_history(run_dir)
        summary["runs"][run.name] = {
            "status": status,
            "cut": cut,
            "seconds": round(seconds, 1),
            "recipe": run.recipe,
            "settings": run.settings,
            "init_from": summary.get("resolved", {}).get(run.name, run.init_from),
            "best": best_of_history(history),
            "history": [{k: v for k, v in entry.items() if k != "val_examples"}
                        | {"example": (entry.get("val_examples") or [""])[0]} for entry in history],
        }
        save_summary()
        best = summary["runs"][run.name]["best"] or {}
        log(f"run {run.name}: status {status}{' (cut)' if cut else ''} in {seconds:.0f} s, "
            f"best epoch {best.get('epoch')} CIDEr {best.get('CIDEr')}")

    def ended_ok(name: str) -> bool:
        info = summary["runs"].get(name, {})
        return info.get("status") == 0 or bool(info.get("cut") and info.get("best"))

    def resolve(run: Run) -> str | None | bool:
        """The run directory name to start from; None: no init; False: not yet; '' : never."""
        if run.init_from is None:
            return None
        if run.init_from == "best_ce":
            ce_runs = [r.name for r in wanted if r.kind == "cross_entropy"]
            if any(name in active or any(p.name == name for p in pending) for name in ce_runs):
                return False
            finished = [(summary["runs"][n]["best"]["CIDEr"], n) for n in ce_runs
                        if summary["runs"].get(n, {}).get("status") == 0 and summary["runs"][n].get("best")]
            return max(finished)[1] if finished else ""
        if run.init_from in active or any(p.name == run.init_from for p in pending):
            return False
        if run.init_from not in summary["runs"] and (work / "runs" / run.init_from / "metrics.json").exists():
            return run.init_from  # finished by an earlier call on this machine
        return run.init_from if summary["runs"].get(run.init_from, {}).get("status") == 0 else ""

    while pending or active:
        for name, (process, began, run) in list(active.items()):
            if process.poll() is not None:
                del active[name]
                record(run, process.returncode, time.time() - began, cut=False)
        if left() <= 0:
            for name, (process, began, run) in list(active.items()):
                status = stop(process)
                del active[name]
                record(run, status, time.time() - began, cut=True)
            for run in pending:
                summary["runs"][run.name] = {"skipped": "the time budget ended first"}
            break
        for run in list(pending):
            if len(active) >= args.parallel:
                break
            origin = resolve(run)
            if origin is False:
                continue
            pending.remove(run)
            if origin == "":
                summary["runs"][run.name] = {"skipped": f"{run.init_from} did not finish"}
                continue
            if left() < args.min_start_s:
                summary["runs"][run.name] = {"skipped": f"{left():.0f} s left"}
                continue
            if origin and origin != run.init_from:
                summary.setdefault("resolved", {})[run.name] = origin
            run_dir = work / "runs" / run.name
            settings = [f"data.feature_cache={work / f'features_{run.cache}'}", f"data.num_workers={args.workers}",
                        f"threads={args.threads}", "mixed_precision=false", *run.settings, *args.extra]
            if run.mirror_cache:
                settings.append(f"data.mirror_feature_cache={work / f'features_{run.mirror_cache}'}")
            if origin:
                settings.append(f"init_from={work / 'runs' / origin}")
                # the model's shape comes with the weights it starts from
                origin_run = next(r for r in RUNS if r.name == origin)
                settings += [s for s in origin_run.settings if s.startswith("decoder.") and s not in settings]
            command = ["train", "--config", run.recipe, "--data", args.data, "--out", str(run_dir),
                       "--device", args.device, "--quiet"]
            for setting in settings:
                command += ["--set", setting]
            log(f"run {run.name}: captioner {' '.join(command)}")
            process = subprocess.Popen([sys.executable, "-m", "captioner", *command],
                                       stdout=(out / "logs" / f"{run.name}.log").open("w"), stderr=subprocess.STDOUT)
            active[run.name] = (process, time.time(), run)
        save_summary()
        time.sleep(1.0)

    soup_dir = None
    if args.soup_of:
        finished = [name for name in args.soup_of.split(",") if summary["runs"].get(name, {}).get("best")]
        if len(finished) >= 2:
            soup_dir = work / "runs" / "soup"
            command = [sys.executable, str(ROOT / "benchmarks" / "weight_soup.py"), "--base", str(work / "runs" / finished[0]),
                       *(str(work / "runs" / name) for name in finished), "--device", args.device, "--threads", "8",
                       "--save", str(soup_dir), "--out", str(out / "weight_soup.json")]
            log(f"soup of {len(finished)} runs: {' '.join(command[1:])}")
            began = time.time()
            with (out / "logs" / "soup.log").open("w") as soup_log:
                status = subprocess.run(command, stdout=soup_log, stderr=subprocess.STDOUT, timeout=300).returncode
            log(f"soup: status {status} in {time.time() - began:.0f} s")
            if status == 0:
                soup = json.loads((out / "weight_soup.json").read_text())
                summary["runs"]["soup"] = {"status": 0, "kind": "soup", "ingredients": soup["greedy_soup"]["ingredients"],
                                           "best": soup["greedy_soup"]["metrics"],
                                           "uniform": soup["uniform_soup"]}
                save_summary()
        else:
            log(f"soup: only {len(finished)} of the runs finished")

    exports = {}
    groups = ({f"best_of_{i}": set(group.split(",")) for i, group in enumerate(args.export_best_of, 1)}
              or {kind: {r.name for r in RUNS if r.kind == kind} for kind in ("self_critical", "fine_tune")})
    if soup_dir is not None and "soup" in summary["runs"]:
        groups["soup"] = {"soup"}
    for label, names in groups.items():
        finished = [(info["best"]["CIDEr"], name) for name, info in summary["runs"].items()
                    if info.get("best") and name in names]
        if finished:
            exports[label] = max(finished)
    for label, (score, name) in exports.items():
        export_dir = work / f"export_{name}"
        status = subprocess.run([sys.executable, "-m", "captioner", "export", "--checkpoint", str(work / "runs" / name),
                                 "--out", str(export_dir)], timeout=120).returncode
        if status != 0:
            log(f"export of {name} failed ({status})")
            continue
        archive = work / f"model_{name}.tar.gz"
        subprocess.run(["tar", "czf", str(archive), "-C", str(work), export_dir.name], check=True)
        subprocess.run(["split", "-b", "15M", str(archive), str(out / f"model_{name}.tar.gz.part-")], check=True)
        summary.setdefault("exported", {})[label] = {"run": name, "CIDEr": score}
        log(f"exported {name} (dev CIDEr-D {score:.4f})")
    save_summary()
    # The machine sends back at most 8 files: the run logs travel as one archive.
    subprocess.run(["tar", "czf", str(out / "logs.tar.gz"), "-C", str(out), "logs"], check=False)
    subprocess.run(["rm", "-rf", str(out / "logs")], check=False)
    log(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
