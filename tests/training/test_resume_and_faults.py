"""Training survives being killed, interrupted and fed non-finite losses.

The kill test is the real thing: a `captioner train` process is SIGKILLed at whatever point it
has reached after its first mid-epoch checkpoint, then `--resume`d; its final weights must be
bit-identical to a run that was never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import TINY_TRAINING

STATE = Path("last") / "training_state.safetensors"


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "captioner", "train", "--config", "scenes_small_cnn", "--data", str(data),
        "--out", str(out), "--epochs", "2", *TINY_TRAINING, "--set", "optim.save_every_steps=3",
        "--set", "eval.max_images=8", "--set", "data.captions_per_image=1", *extra,
    ]


def trainer_step(run_dir: Path) -> int:
    try:
        with safe_open(str(run_dir / STATE), framework="pt") as handle:
            return json.loads(handle.metadata()["trainer"])["step"]
    except Exception:  # not written yet, or being renamed into place
        return -1


def start_and_stop(command: list[str], run_dir: Path, how: int) -> int:
    """Start training, wait for a mid-epoch checkpoint, send ``how``; returns the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while trainer_step(run_dir) < 3:
        if process.poll() is not None:
            pytest.fail(f"training ended before it could be stopped: {process.stderr.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("no checkpoint within 240 s")
        time.sleep(0.05)
    process.send_signal(how)
    process.wait(timeout=120)
    return process.returncode


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(run_dir / STATE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("model.")}


@pytest.fixture(scope="module")
def straight_run(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(tiny_scenes, out), check=True, env=env, capture_output=True)
    return out


def assert_bit_identical(run_dir: Path, reference: Path) -> None:
    ours, theirs = final_weights(run_dir), final_weights(reference)
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
    assert torch.equal(
        load_file(str(run_dir / "model.safetensors"))["decoder.output.weight"],
        load_file(str(reference / "model.safetensors"))["decoder.output.weight"],
    )
    history = [json.loads(line)["val"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["val"] for line in (reference / "history.jsonl").read_text().splitlines()]
    assert history[-1] == expected[-1]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_scenes: Path, straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    status = start_and_stop(train_command(tiny_scenes, out), out, signal.SIGKILL)
    assert status == -signal.SIGKILL
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(train_command(tiny_scenes, out, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stderr
    assert_bit_identical(out, straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_and_exits_cleanly_then_resumes(
    tiny_scenes: Path, straight_run: Path, tmp_path: Path, how: int
) -> None:
    out = tmp_path / "interrupted"
    status = start_and_stop(train_command(tiny_scenes, out), out, how)
    assert status == 130
    stopped_at = trainer_step(out)
    assert stopped_at >= 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(train_command(tiny_scenes, out, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_bit_identical(out, straight_run)


def tiny_config(data: Path, **optim: object):
    from captioner.training.config import RunConfig

    values = json.loads((Path(__file__).parents[2] / "src/captioner/recipes/scenes_small_cnn.json").read_text())
    values["data"]["path"] = str(data)
    values["decoder"].update(embed_dim=16, hidden_dim=32, attention_dim=16)
    values["optim"].update({"epochs": 1, "batch_size": 32, "warmup_steps": 2, **optim})
    values["eval"]["max_images"] = 8
    values["threads"] = 1
    return RunConfig.from_dict(values)


def poisoned_loss(bad_steps: set[int]):
    """caption_loss that returns NaN on the given calls (counting from 0)."""
    from captioner.training import loop

    real = loop.caption_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        total, cross_entropy = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] - 1 in bad_steps:
            return total * float("nan"), cross_entropy
        return total, cross_entropy

    return loss


def test_a_non_finite_loss_skips_the_step_and_training_goes_on(tiny_scenes, tmp_path, monkeypatch, caplog) -> None:
    from captioner.training import loop

    monkeypatch.setattr(loop, "caption_loss", poisoned_loss({2, 5}))
    with caplog.at_level("WARNING"):
        result = loop.train(tiny_config(tiny_scenes), tmp_path / "run", progress=False)
    assert result.epochs_run == 1
    warnings = [r.message for r in caplog.records if "non-finite" in r.message]
    assert len(warnings) == 2
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_loss_that_stays_non_finite_stops_training_with_a_clear_message(tiny_scenes, tmp_path, monkeypatch) -> None:
    from captioner.training import loop

    monkeypatch.setattr(loop, "caption_loss", poisoned_loss(set(range(3, 1000))))
    with pytest.raises(loop.TrainingDiverged, match="4 steps in a row.*learning_rate"):
        loop.train(tiny_config(tiny_scenes, max_bad_steps=4), tmp_path / "run", progress=False)
    # The state before the fault is kept for --resume.
    assert (tmp_path / "run" / STATE).is_file()


def test_a_run_resumed_after_it_stopped_early_stays_stopped(tiny_scenes, tmp_path, monkeypatch) -> None:
    """The state saved after the epoch that ran out of patience must not train on when resumed:
    the resumed run ends where the uninterrupted one ended."""
    from types import SimpleNamespace

    from captioner.training import loop

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])  # validation only gets worse after epoch 1
    monkeypatch.setattr(loop, "score_predictions", lambda *a, **k: SimpleNamespace(corpus={"CIDEr": next(scores)}))
    config = tiny_config(tiny_scenes, epochs=4, early_stopping_patience=1)
    assert loop.train(config, tmp_path / "run", progress=False).epochs_run == 2
    history = (tmp_path / "run" / "history.jsonl").read_text()
    assert loop.train(config, tmp_path / "run", resume=True, progress=False).epochs_run == 2
    assert (tmp_path / "run" / "history.jsonl").read_text() == history
