"""Fixtures shared across test folders: a tiny scenes dataset and a tiny trained run.

Training even a tiny model costs seconds, so the run is made once per test session and reused
by the tests that only read it (captioning, evaluation, figures, checkpoint loading).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_SIZES = {"train": 240, "val": 40, "test": 40, "test-novel": 40}
# Sizes that keep a training epoch to a few seconds on one CPU core.
TINY_TRAINING = [
    "--set", "decoder.embed_dim=16",
    "--set", "decoder.hidden_dim=32",
    "--set", "decoder.attention_dim=16",
    "--set", "optim.warmup_steps=2",
    "--set", "optim.batch_size=32",
    "--set", "eval.max_images=40",
    "--set", "threads=1",
    "--quiet",
]


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioner.data.scenes.generator import build_scenes

    out = tmp_path_factory.mktemp("scenes") / "scenes"
    build_scenes(out, seed=0, sizes=TINY_SIZES, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioner.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    torch.set_num_threads(1)
    status = main(["train", "--config", "scenes_small_cnn", "--data", str(tiny_scenes), "--out", str(run_dir),
                   "--epochs", "1", *TINY_TRAINING])
    assert status == 0
    return run_dir
