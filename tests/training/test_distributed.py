"""Data parallel training equals one process on the same global batch.

Two gloo processes under torchrun (CPU), each with half of every batch, must end with the
weights and losses of a single process that sees whole batches; so must one process that cuts
each batch into accumulation steps, up to the rounding noise that one process shows when only
the order of its sums changes. Dropout is off: its masks are drawn per process. The encoder
is frozen with cached features (the usual multi-GPU set-up): a trained encoder's BatchNorm would
see per-process batch statistics, which differ by design.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY_TRAINING

SETTINGS = [*TINY_TRAINING, "--set", "decoder.dropout=0.0", "--set", "data.captions_per_image=2",
            "--set", "eval.max_images=8", "--set", "optim.batch_size=32", "--encoder", "efficientnet_lite0",
            "--encoder-layer", "final", "--set", "encoder.image_size=64", "--set", "encoder.pretrained=true"]
# A bias added to every attention logit cancels in the softmax: its true gradient is 0, so Adam
# moves it by rounding noise, which differs with the order of the sums. Not comparable.
GRADIENT_FREE = {"model.decoder.attention.score.bias"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(data: Path, cache: Path, out: Path, *extra: str, processes: int = 1) -> None:
    command = ["-m", "captioner", "train", "--config", "scenes_small_cnn", "--data", str(data), "--out", str(out),
               "--epochs", "1", "--feature-cache", str(cache), *SETTINGS, *extra]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                   "--master-port", str(free_port()), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "history.jsonl").read_text().splitlines()]


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(run_dir / "last" / "training_state.safetensors"))
    return {name: tensor for name, tensor in state.items() if name.startswith("model.") and name not in GRADIENT_FREE}


def rounding_noise(reordered: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """How far one process's weights move when only the order of its sums changes (two threads
    instead of one). Adam divides each gradient by its own size, so a weight whose true gradient
    is nearly zero takes a step of its rounding's sign: on CPUs with wider vector units (AVX-512)
    a few such weights differ by ~1e-4 between summation orders, in one process alone."""
    return max((reordered[name] - tensor).abs().max().item() for name, tensor in reference.items())


def assert_same_training(run_dir: Path, reference: Path, reordered: Path) -> None:
    """``run_dir`` trained as ``reference`` did, up to 1e-5 or to four times the rounding noise that
    ``reordered`` (the reference's run on two threads) measures, whichever is larger."""
    ours, theirs = trained_weights(run_dir), trained_weights(reference)
    atol = max(1e-5, 4 * rounding_noise(trained_weights(reordered), theirs))
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-4, atol=atol, msg=lambda detail, name=name: f"{name}: {detail}")
    assert losses(run_dir) == pytest.approx(losses(reference), rel=1e-5)


@pytest.fixture(scope="module")
def feature_cache(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioner.cli import main

    out = tmp_path_factory.mktemp("cache") / "lite0_64"
    assert main(["features", "--data", str(tiny_scenes), "--split", "train,val", "--image-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def single_process_run(tiny_scenes: Path, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    train(tiny_scenes, feature_cache, out)
    return out


@pytest.fixture(scope="module")
def reordered_single_process_run(tiny_scenes: Path, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single_two_threads") / "run"
    train(tiny_scenes, feature_cache, out, "--set", "threads=2")
    return out


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(
    tiny_scenes: Path, feature_cache: Path, single_process_run: Path, reordered_single_process_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    train(tiny_scenes, feature_cache, out, processes=2)
    assert_same_training(out, single_process_run, reordered_single_process_run)


@pytest.mark.slow
def test_gradient_accumulation_equals_the_whole_batch(
    tiny_scenes: Path, feature_cache: Path, single_process_run: Path, reordered_single_process_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "accumulated"
    train(tiny_scenes, feature_cache, out, "--set", "optim.accumulation_steps=4")
    assert_same_training(out, single_process_run, reordered_single_process_run)


@pytest.mark.slow
def test_grouped_captions_two_gloo_processes_equal_one_process(
    tiny_scenes: Path, feature_cache: Path, tmp_path: Path
) -> None:
    """data.group_captions: each process takes whole images of the global batch, with all their
    captions; the update is the one process's."""
    grouped = ("--set", "data.group_captions=true")
    single, reordered = tmp_path / "single", tmp_path / "single_two_threads"
    train(tiny_scenes, feature_cache, single, *grouped)
    train(tiny_scenes, feature_cache, reordered, *grouped, "--set", "threads=2")
    out = tmp_path / "ddp"
    train(tiny_scenes, feature_cache, out, *grouped, processes=2)
    assert_same_training(out, single, reordered)
