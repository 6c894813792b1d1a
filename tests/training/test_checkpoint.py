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
    state = checkpoint.load_training_state(tmp_path, restored_model, restored_optimizer)
    assert state == {"epoch": 2, "step": 10}
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
