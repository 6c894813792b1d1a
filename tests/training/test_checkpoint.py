import pytest
import torch

from captioner.data.text import Vocabulary
from captioner.errors import CheckpointError
from captioner.training import checkpoint
from captioner.training.config import RunConfig
from captioner.training.loop import build_model


def small_config() -> RunConfig:
    config = RunConfig()
    config.encoder.name = "small_cnn"
    config.encoder.pretrained = False
    config.encoder.image_size = 64
    config.decoder.embed_dim, config.decoder.hidden_dim, config.decoder.attention_dim = 8, 16, 8
    return config


def vocabulary() -> Vocabulary:
    return Vocabulary.build([["a", "red", "circle"], ["a", "blue", "square"]], min_count=1)


def test_run_directory_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    config, vocab = small_config(), vocabulary()
    model = build_model(config, vocab)
    checkpoint.save_run(tmp_path, config, vocab, model, {"CIDEr": 1.5})
    loaded = checkpoint.load_run(tmp_path)
    assert loaded.config == config and loaded.vocabulary == vocab and loaded.metrics == {"CIDEr": 1.5}
    fresh = build_model(loaded.config, loaded.vocabulary, pretrained_encoder=False)
    checkpoint.load_state_strict(fresh, loaded.weights, tmp_path / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_weights_that_do_not_match_the_config_name_the_tensor(tmp_path):
    config, vocab = small_config(), vocabulary()
    checkpoint.save_run(tmp_path, config, vocab, build_model(config, vocab))
    config.decoder.hidden_dim = 24
    fresh = build_model(config, vocab)
    with pytest.raises(CheckpointError, match=r"tensor 'decoder\..*' has shape"):
        checkpoint.load_state_strict(fresh, checkpoint.load_run(tmp_path).weights, tmp_path / "model.safetensors")


@pytest.mark.parametrize("damage", ["missing_weights", "corrupt_weights", "bad_config", "not_a_dir"])
def test_damaged_run_directories_give_one_line_errors(tmp_path, damage):
    config, vocab = small_config(), vocabulary()
    run = tmp_path / "run"
    checkpoint.save_run(run, config, vocab, build_model(config, vocab))
    if damage == "missing_weights":
        (run / "model.safetensors").unlink()
    elif damage == "corrupt_weights":
        (run / "model.safetensors").write_bytes(b"\x00garbage")
    elif damage == "bad_config":
        (run / "config.json").write_text('{"optim": {"epochs": "many"}}')
    else:
        run = tmp_path / "nowhere"
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(run)
    assert "\n" not in str(error.value)


def test_training_state_round_trip_restores_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    config, vocab = small_config(), vocabulary()
    model = build_model(config, vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.decoder(torch.randn(2, 64, 128), torch.randint(0, len(vocab), (2, 4))).logits.sum().backward()
    optimizer.step()
    checkpoint.save_training_state(tmp_path, model, optimizer, {"epoch": 2, "step": 10})
    expected_next_random = torch.rand(3)

    restored_model = build_model(config, vocab)
    restored_optimizer = torch.optim.Adam(restored_model.parameters(), lr=1e-3)
    state, extra = checkpoint.load_training_state(tmp_path, restored_model, restored_optimizer)
    assert state == {"epoch": 2, "step": 10}
    assert extra == {}
    assert torch.equal(torch.rand(3), expected_next_random)
    original, restored = optimizer.state_dict(), restored_optimizer.state_dict()
    assert original["param_groups"] == restored["param_groups"]
    for key, value in original["state"].items():
        for name, tensor in value.items():
            assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(restored["state"][key][name]))


def test_export_leaves_out_a_frozen_encoder_and_restores_it_from_its_source(tmp_path):
    from captioner.training.loop import restore_model

    torch.manual_seed(0)
    config, vocab = RunConfig(), vocabulary()  # frozen, pretrained EfficientNet-Lite0
    config.decoder.embed_dim, config.decoder.hidden_dim, config.decoder.attention_dim = 8, 16, 8
    model = build_model(config, vocab)
    checkpoint.save_run(tmp_path / "run", config, vocab, model, {"CIDEr": 0.5})
    checkpoint.export_run(tmp_path / "run", tmp_path / "shipped")
    shipped = checkpoint.load_run(tmp_path / "shipped")
    assert not checkpoint.has_encoder_weights(shipped.weights)
    assert all(t.dtype == torch.float16 for t in shipped.weights.values() if t.is_floating_point())
    assert shipped.metrics == {"CIDEr": 0.5}
    restored = restore_model(shipped)
    for name, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, restored.encoder.state_dict()[name]), name
    for name, tensor in model.decoder.state_dict().items():
        torch.testing.assert_close(restored.decoder.state_dict()[name], tensor, atol=1e-3, rtol=1e-3)


def test_int8_storage_keeps_every_weight_within_half_a_step_of_its_group():
    torch.manual_seed(0)
    matrix = torch.randn(256, 512) * torch.linspace(0.01, 3.0, 512)  # groups of very different sizes
    matrix[0, :64] = 0.0  # an all-zero group must come back as zeros, not NaN
    weights = {"big": matrix, "bias": torch.randn(256), "small": torch.randn(8, 64), "odd": torch.randn(1024, 100)}
    stored = checkpoint.quantize_int8(weights)
    assert stored["big"].dtype == torch.int8 and stored["big.int8_scales"].shape == (256, 8)
    assert stored["big.int8_scales"].dtype == torch.float16
    for kept in ("bias", "small", "odd"):  # vectors, small matrices and rows that are not whole groups
        assert stored[kept] is weights[kept] and kept + ".int8_scales" not in stored
    restored = checkpoint.dequantize_int8(stored, source=checkpoint.Path("model.safetensors"))
    assert set(restored) == set(weights) and restored["big"].dtype == torch.float32
    step = matrix.reshape(256, 8, 64).abs().amax(dim=2, keepdim=True) / 127
    error = (restored["big"] - matrix).reshape(256, 8, 64).abs()
    assert torch.all(error <= step * 0.5 + step * 2e-3)  # half a level, plus the fp16 rounding of the scale
    assert torch.equal(restored["big"][0, :64], torch.zeros(64))


def test_int8_storage_reproduces_values_on_its_grid_exactly():
    levels = torch.randint(-127, 128, (1024, 64), generator=torch.Generator().manual_seed(0)).float()
    levels[:, 0] = 127  # each row's largest magnitude is 127 levels of 0.5
    stored = checkpoint.quantize_int8({"w": levels * 0.5})  # scale 0.5: exact in fp16
    assert torch.equal(stored["w.int8_scales"], torch.full((1024, 1), 0.5, dtype=torch.float16))
    assert torch.equal(stored["w"].float(), levels)


def test_export_int8_shrinks_the_weights_and_loads_them_back_as_float(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from captioner.training.loop import restore_model

    monkeypatch.setattr(checkpoint, "INT8_MIN_VALUES", 1024)  # so that a test-sized decoder has int8 matrices
    torch.manual_seed(0)
    config, vocab = small_config(), vocabulary()
    config.decoder.embed_dim, config.decoder.hidden_dim, config.decoder.attention_dim = 64, 64, 64
    model = build_model(config, vocab)
    checkpoint.save_run(tmp_path / "run", config, vocab, model)
    checkpoint.export_run(tmp_path / "run", tmp_path / "fp16")
    checkpoint.export_run(tmp_path / "run", tmp_path / "int8", int8=True)
    fp16_size = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    int8_size = (tmp_path / "int8" / "model.safetensors").stat().st_size
    assert int8_size < 0.8 * fp16_size  # the small CNN's convolutions and the vectors stay fp16
    raw = load_file(str(tmp_path / "int8" / "model.safetensors"))
    assert raw["decoder.lstm.weight_ih"].dtype == torch.int8 and raw["decoder.lstm.bias_ih"].dtype == torch.float16
    loaded = checkpoint.load_run(tmp_path / "int8")
    assert not any(name.endswith(".int8_scales") for name in loaded.weights)
    restored = restore_model(loaded)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name].float(), tensor.float(), atol=0.02, rtol=0.02)


def test_damaged_int8_scales_give_a_one_line_error(tmp_path):
    from safetensors.torch import save_file

    stored = checkpoint.quantize_int8({"decoder.w": torch.randn(128, 1024)})
    stored["decoder.w.int8_scales"] = stored["decoder.w.int8_scales"][:, :3].contiguous()  # 1024 is not 3 whole groups
    save_file(stored, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: 'decoder.w.int8_scales' does not fit"):
        checkpoint.load_weights(tmp_path / "model.safetensors")
    del stored["decoder.w.int8_scales"]  # int8 levels alone would load as nonsense weights
    save_file(stored, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"int8 tensor 'decoder.w' has no 'decoder.w.int8_scales'"):
        checkpoint.load_weights(tmp_path / "model.safetensors")


def test_export_command_writes_int8_weights_that_caption_like_the_run(tmp_path, capsys, monkeypatch):
    from captioner.api import Captioner
    from captioner.cli import main

    monkeypatch.setattr(checkpoint, "INT8_MIN_VALUES", 1024)
    torch.manual_seed(0)
    config, vocab = small_config(), vocabulary()
    config.decoder.embed_dim, config.decoder.hidden_dim, config.decoder.attention_dim = 64, 64, 64
    checkpoint.save_run(tmp_path / "run", config, vocab, build_model(config, vocab))
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "int8"), "--int8"]) == 0
    assert "MB of weights" in capsys.readouterr().out
    from PIL import Image

    image = Image.fromarray(torch.rand(64, 64, 3).mul(255).byte().numpy())
    original = Captioner.from_pretrained(tmp_path / "run", device="cpu").caption(image)[0]
    exported = Captioner.from_pretrained(tmp_path / "int8", device="cpu").caption(image)[0]
    assert exported.ok and exported.caption == original.caption


@pytest.mark.parametrize("averaged", [False, True])
def test_init_weights_last_starts_from_the_last_saved_state_not_the_best(tmp_path, averaged):
    from captioner.training.averaging import WeightAverage
    from captioner.training.loop import load_initial_weights

    torch.manual_seed(0)
    config, vocab = small_config(), vocabulary()
    source = tmp_path / "source"
    best = build_model(config, vocab)
    checkpoint.save_run(source, config, vocab, best)
    last = build_model(config, vocab)  # other random weights: the run went on after its best epoch
    average = WeightAverage(last, decay=0.5) if averaged else None
    if average is not None:
        with torch.no_grad():
            for parameter in last.parameters():
                parameter.add_(1.0)
        average.update()  # the average now lies between the last weights and those 1.0 lower
    optimizer = torch.optim.Adam(last.parameters())
    checkpoint.save_training_state(source, last, optimizer, {"epoch": 8}, average.state_dict() if average else None)

    def started(init_weights: str) -> dict[str, torch.Tensor]:
        run_config = small_config()
        run_config.init_from, run_config.init_weights = str(source), init_weights
        model = build_model(run_config, vocab)
        load_initial_weights(model, run_config)
        return model.state_dict()

    expected_last = dict(last.state_dict())
    if average is not None:
        expected_last.update(average.shadow)
        assert not torch.equal(average.shadow["decoder.output.weight"], last.state_dict()["decoder.output.weight"])
    for name, tensor in started("best").items():
        assert torch.equal(tensor, best.state_dict()[name]), name
    for name, tensor in started("last").items():
        assert torch.equal(tensor, expected_last[name]), name


def test_init_weights_last_without_a_training_state_says_so(tmp_path):
    from captioner.errors import ConfigError
    from captioner.training.loop import load_initial_weights

    config, vocab = small_config(), vocabulary()
    checkpoint.save_run(tmp_path / "source", config, vocab, build_model(config, vocab))
    config.init_from, config.init_weights = str(tmp_path / "source"), "last"
    with pytest.raises(CheckpointError, match=r"training_state.safetensors is missing: .* set init_weights=best"):
        load_initial_weights(build_model(config, vocab), config)
    (tmp_path / "source" / "last").mkdir()
    (tmp_path / "source" / "last" / "training_state.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"is damaged .*init_weights=best") as error:
        load_initial_weights(build_model(config, vocab), config)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="init_weights must be one of best, last"):
        RunConfig.from_dict({"init_weights": "first"})
