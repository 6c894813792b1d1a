"""The ensemble, the mirror average and the recipe stages that make them, on a CUDA GPU against the CPU.

Usage (repository root, on a machine with a CUDA GPU; no weights package or dataset needed):
    PYTHONPATH=src python3 benchmarks/gpu_ensemble_check.py --out OUT_DIR

It builds a small scenes dataset, runs one recipe of several stages on the GPU (`captioner train
--device cuda`): three runs of the scenes recipe (its small CNN trained with the decoder, so
that no weights package is needed), a soup of two of them, and an int8 ensemble of the soup and
the third that averages each photo's grids with its mirror image's. Then it captions the validation photos with that ensemble on the GPU and on
the CPU and writes OUT/gpu_ensemble_check.json: the encoders' grids and the first word's
mixture on both devices, how many captions agree, and the stages' scores. Exit status 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="the device to compare with the CPU (cpu: a dry run of this script)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device
    if gpu == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to compare", file=sys.stderr)
        return 2

    from captioner.api import Captioner
    from captioner.cli import main as cli
    from captioner.data.images import load_rgb_image
    from captioner.data.readers import load_records
    from captioner.data.scenes.generator import build_scenes

    report: dict = {"gpu": torch.cuda.get_device_name(0) if gpu == "cuda" else gpu, "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="gpu_ensemble_"))
    started = time.perf_counter()
    scenes = build_scenes(work / "scenes", seed=0, sizes={"train": 2000, "val": 48}, workers=4, progress=False)
    # The scenes recipe's small CNN, trained with each run: frozen pretrained CNNs need their weights
    # packages, and a randomly initialised EfficientNet's grid is all but zero.
    (work / "small_cnn.json").write_text((ROOT / "src/captioner/recipes/scenes_small_cnn.json").read_text())
    (work / "pipeline.json").write_text(json.dumps({"stages": [
        {"name": "cnn_a", "recipe": "small_cnn.json"},
        {"name": "cnn_b", "recipe": "small_cnn.json", "set": {"seed": 1}},
        {"name": "cnn_c", "recipe": "small_cnn.json", "set": {"seed": 2, "optim.learning_rate": 0.003}},
        {"name": "soup", "soup": ["cnn_a", "cnn_b"]},
        {"name": "ensemble", "ensemble": ["soup", "cnn_c"], "int8": True, "set": {"eval.mirror_weight": 0.5}},
    ]}))  # fmt: skip
    run_dir = work / "run"
    status = cli(["train", "--config", str(work / "pipeline.json"), "--data", str(scenes), "--out", str(run_dir),
                  "--device", gpu, "--epochs", str(args.epochs), "--quiet"])  # fmt: skip
    report["train_status"] = status
    if status != 0:
        (out / "gpu_ensemble_check.json").write_text(json.dumps(report, indent=1))
        return 1
    state = json.loads((run_dir / "pipeline.json").read_text())
    report["stages"] = {
        name: {"kind": s["kind"], "seconds": s["seconds"], "CIDEr": s["best"].get("CIDEr")}
        for name, s in state["finished"].items()
    }  # fmt: skip
    report["train_seconds"] = round(time.perf_counter() - started, 1)

    records = load_records(scenes, split="val")
    images = [load_rgb_image(r.image_path) for r in records]
    on = {"gpu": Captioner.from_pretrained(run_dir, device=gpu), "cpu": Captioner.from_pretrained(run_dir, device="cpu")}
    pixels = torch.stack([on["cpu"].model.encoder.preprocess(image) for image in images[:8]])
    with torch.inference_mode():
        grids = {d: c.model.encode(pixels.to(c.device)).float().cpu() for d, c in on.items()}
    grid_gap = (grids["gpu"] - grids["cpu"]).abs().max().item()
    scale = grids["cpu"].abs().max().item()
    with torch.inference_mode():
        first_word = {}
        for device, captioner in on.items():
            decoder = captioner.model.decoder
            regions = grids["cpu"].to(captioner.device)
            state0 = decoder.init_state(regions)
            tokens = torch.full((regions.size(0),), captioner.vocabulary.start_id, device=captioner.device)
            step = decoder.step(tokens, state0, regions, decoder.project_regions(regions))
            first_word[device] = torch.log_softmax(step.logits.float(), dim=-1).cpu()
    word_gap = (first_word["gpu"] - first_word["cpu"]).abs().max().item()

    timings, captions = {}, {}
    for device, captioner in on.items():
        began = time.perf_counter()
        captions[device] = [r.caption for r in captioner.caption(images, beam_size=3, batch_size=16)]
        timings[device] = round(time.perf_counter() - began, 2)
    agree = sum(a == b for a, b in zip(captions["gpu"], captions["cpu"]))
    attention = on["gpu"].caption(images[:1], beam_size=3)[0].attention
    report.update({
        "grid_max_abs_gap": grid_gap, "grid_max_abs": scale, "first_word_log_prob_max_gap": word_gap,
        "captions_agree": f"{agree}/{len(images)}", "caption_seconds": timings,
        "examples": {d: c[:3] for d, c in captions.items()},
        "attention_shape": list(getattr(attention, "shape", [])),
    })  # fmt: skip
    checks = {
        "grids within fp16 noise": grid_gap <= 2e-2 * max(scale, 1.0),
        "first word within 1e-2": word_gap <= 1e-2,
        "captions agree on 90%": agree >= 0.9 * len(images),
        "one attention map per word": bool(report["attention_shape"]),
    }
    report["checks"] = checks
    (out / "gpu_ensemble_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
