"""The moving average of the weights: its arithmetic, and what a run validates, saves and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from captioner.errors import CheckpointError, ConfigError
from captioner.training.averaging import WeightAverage
from captioner.training.config import RunConfig
from tests.training.test_resume_and_faults import STATE, tiny_config


def linear(*values: float) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def test_updates_follow_the_ramped_decay_computed_by_hand() -> None:
    layer = linear(1.0, 1.0)
    average = WeightAverage(layer, decay=0.2)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    average.update()  # decay min(0.2, 2/11) = 2/11: 2/11 * 1 + 9/11 * 3
    assert average.shadow["weight"].flatten().tolist() == pytest.approx([29 / 11, 29 / 11])
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average.update()  # decay min(0.2, 3/12) = 0.2
    assert average.shadow["weight"].flatten().tolist() == pytest.approx([0.2 * 29 / 11] * 2)
    assert [average.decay_at(n) for n in (1, 2, 100)] == pytest.approx([2 / 11, 0.2, 0.2])
    assert WeightAverage(layer, 0.999).decay_at(90) == pytest.approx(91 / 100)


def test_applied_swaps_the_average_in_and_the_trained_weights_back() -> None:
    model = nn.Sequential(linear(1.0, 2.0), linear(5.0))
    model[1].weight.requires_grad_(False)  # frozen: not averaged, never touched
    average = WeightAverage(model, decay=0.5)
    assert set(average.shadow) == {"0.weight"}
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[9.0, 10.0]]))
    with average.applied():
        assert model[0].weight.tolist() == [[1.0, 2.0]]
        assert model[1].weight.tolist() == [[5.0]]
    assert model[0].weight.tolist() == [[9.0, 10.0]]


def test_state_round_trip_and_a_mismatched_state_is_a_checkpoint_error() -> None:
    model = linear(1.0, 2.0)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(4.0)
    average.update()
    restored = WeightAverage(linear(0.0, 0.0), decay=0.9)
    restored.load_state_dict(average.state_dict(), "state.safetensors")
    assert restored.updates == 1
    assert torch.equal(restored.shadow["weight"], average.shadow["weight"])
    wider = WeightAverage(linear(0.0, 0.0, 0.0), decay=0.9)
    for tensors, target in ((average.state_dict(), wider), ({}, restored)):
        with pytest.raises(CheckpointError, match="state.safetensors.*weight average"):
            target.load_state_dict(tensors, "state.safetensors")


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused_when_the_config_is_read(decay: float) -> None:
    with pytest.raises(ConfigError, match="optim.weight_average_decay"):
        RunConfig.from_dict({"optim": {"weight_average_decay": decay}})


def saved_state(run_dir) -> dict[str, torch.Tensor]:
    with safe_open(str(run_dir / STATE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def test_a_run_validates_and_saves_the_average_and_trains_the_raw_weights(tiny_scenes, tmp_path) -> None:
    from captioner.training import loop

    run_dir = tmp_path / "run"
    loop.train(tiny_config(tiny_scenes, weight_average_decay=0.9, early_stopping_patience=0), run_dir, progress=False)
    state, saved = saved_state(run_dir), load_file(str(run_dir / "model.safetensors"))
    name = "decoder.output.weight"
    # One epoch, one validation: the best weights are the average at the end of it.
    assert torch.equal(saved[name], state[f"extra.shadow.{name}"])
    assert not torch.equal(saved[name], state[f"model.{name}"])
    assert int(state["extra.updates"]) == json.loads((run_dir / "history.jsonl").read_text())["step"]


def interrupted_at_step(step: int):
    """caption_loss that raises KeyboardInterrupt on its ``step``-th call (from 0)."""
    from captioner.training import loop

    real, calls = loop.caption_loss, {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] - 1 == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return loss


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_resume_continues_the_average_bit_for_bit(tiny_scenes, tmp_path, monkeypatch, decay: float) -> None:
    from captioner.training import loop

    config = tiny_config(tiny_scenes, epochs=2, save_every_steps=2, weight_average_decay=decay, early_stopping_patience=0)
    loop.train(config, tmp_path / "straight", progress=False)
    with monkeypatch.context() as patched:
        patched.setattr(loop, "caption_loss", interrupted_at_step(3))
        with pytest.raises(KeyboardInterrupt):
            loop.train(config, tmp_path / "resumed", progress=False)
    if not decay:
        # A run directory written before the setting existed resumes as if it had the default.
        saved_config = tmp_path / "resumed" / "config.json"
        values = json.loads(saved_config.read_text())
        del values["optim"]["weight_average_decay"]
        saved_config.write_text(json.dumps(values))
    loop.train(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = saved_state(tmp_path / "straight"), saved_state(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight if not k.startswith("rng."))
    assert torch.equal(
        load_file(str(tmp_path / "straight" / "model.safetensors"))["decoder.output.weight"],
        load_file(str(tmp_path / "resumed" / "model.safetensors"))["decoder.output.weight"],
    )
