"""``cpu_bf16``: bfloat16 autocast for training on a CPU that computes it natively, and plain
float32 (with a warning) on one that does not."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from captioner.cli import main
from captioner.models import packed_linear
from tests.conftest import TINY_TRAINING


def train_losses(data: Path, out: Path, *extra: str) -> list[float]:
    torch.set_num_threads(1)
    assert main(["train", "--config", "scenes_small_cnn", "--data", str(data), "--out", str(out),
                 "--epochs", "2", *TINY_TRAINING, "--set", "decoder.dropout=0.0", *extra]) == 0
    return [json.loads(line)["train_loss"] for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fp32_losses(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    return train_losses(tiny_scenes, tmp_path_factory.mktemp("fp32") / "run")


@pytest.mark.skipif(not packed_linear.bfloat16_supported(),
                    reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX): cpu_bf16 trains in fp32 here")
def test_cpu_bf16_trains_in_bfloat16_close_to_float32(tiny_scenes, fp32_losses, tmp_path):
    losses = train_losses(tiny_scenes, tmp_path / "bf16", "--set", "cpu_bf16=true")
    assert losses != fp32_losses  # bfloat16 did run
    assert losses == pytest.approx(fp32_losses, rel=0.05)


def test_cpu_bf16_without_native_bfloat16_trains_in_float32_and_says_so(
    tiny_scenes, fp32_losses, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(packed_linear, "_cpu_multiplies_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        losses = train_losses(tiny_scenes, tmp_path / "fallback", "--set", "cpu_bf16=true")
    assert losses == fp32_losses
    assert "cpu_bf16: this CPU has no native bfloat16" in caplog.text
