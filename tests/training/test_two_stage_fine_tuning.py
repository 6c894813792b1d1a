"""Two-stage encoder fine-tuning: a decoder trained on frozen features, then the encoder's last
block unfrozen (reading cached activations of the frozen trunk) with its own learning rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY_TRAINING

LITE0_64 = ["--encoder", "efficientnet_lite0", "--encoder-layer", "final", "--set", "encoder.image_size=64", "--set", "encoder.pretrained=true",
            "--set", "eval.max_images=8", "--set", "data.captions_per_image=1"]


@pytest.mark.slow
def test_second_stage_starts_from_the_first_and_trains_only_the_last_block(tiny_scenes: Path, tmp_path: Path) -> None:
    from captioner.cli import main

    features, trunk = tmp_path / "features", tmp_path / "trunk"
    assert main(["features", "--data", str(tiny_scenes), "--split", "train,val", "--image-size", "64",
                 "--out", str(features), "--no-progress"]) == 0
    assert main(["features", "--data", str(tiny_scenes), "--split", "train,val", "--image-size", "64",
                 "--trunk-only", "--fine-tune-blocks", "1", "--out", str(trunk), "--no-progress"]) == 0
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    common = ["--config", "scenes_small_cnn", "--data", str(tiny_scenes), "--epochs", "1", *TINY_TRAINING, *LITE0_64]
    assert main(["train", *common, "--out", str(stage1), "--feature-cache", str(features)]) == 0
    assert main(["train", *common, "--out", str(stage2), "--feature-cache", str(trunk), "--fine-tune-encoder", "1",
                 "--set", f"init_from={stage1}", "--set", "encoder.fine_tune_lr=1e-5"]) == 0

    history = [json.loads(line) for line in (stage2 / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]

    # Stage 2 starts from stage 1's weights, and its unfrozen block turns the cached trunk
    # activations into the features stage 1 was trained on (up to the caches' float16 rounding).
    from captioner.encoders.cache import FeatureCache
    from captioner.training.checkpoint import load_run
    from captioner.training.config import RunConfig
    from captioner.training.loop import build_model, load_initial_weights

    config = RunConfig.load(stage2 / "config.json")
    model = build_model(config, load_run(stage1).vocabulary)
    load_initial_weights(model, config)
    first_weights = load_file(str(stage1 / "model.safetensors"))
    assert all(torch.equal(tensor, first_weights[name]) for name, tensor in model.state_dict().items())
    final_cache, trunk_cache = FeatureCache.open(features), FeatureCache.open(trunk)
    model.eval()
    with torch.no_grad():
        from_trunk = model.encoder.forward_head(torch.stack([trunk_cache[i].float() for i in range(16)]))
    torch.testing.assert_close(from_trunk, torch.stack([final_cache[i].float() for i in range(16)]), rtol=2e-2, atol=2e-2)

    before = load_file(str(stage1 / "model.safetensors"))
    after = load_file(str(stage2 / "last" / "training_state.safetensors"))
    changed = {name for name, tensor in before.items()
               if name.startswith("encoder.") and not torch.equal(tensor, after[f"model.{name}"])}
    assert changed, "the unfrozen block did not train"
    last_block = sorted({name.split(".")[2] for name in changed})
    assert len(last_block) == 1, f"more than the last block changed: {sorted(changed)[:5]}"
