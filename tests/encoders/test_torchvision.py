"""Torchvision backbones: grids, ResNet trunk/head, offline-only weights with one-line errors."""

from __future__ import annotations

import os

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from captioner.encoders import EncoderConfig, build_encoder
from captioner.encoders.torchvision import hub_cache_path, torchvision_backbones
from captioner.errors import CheckpointError, ConfigError


@pytest.mark.parametrize(
    "name, layer, image_size, dim, grid",
    [
        ("resnet50", None, 224, 2048, (7, 7)),
        ("resnet50", "layer3", 224, 1024, (14, 14)),
        ("resnet18", None, 160, 512, (5, 5)),
        ("mobilenet_v3_large", None, 224, 960, (7, 7)),
        ("densenet121", None, 96, 1024, (3, 3)),
    ],
)
def test_grid_shapes(name, layer, image_size, dim, grid):
    encoder = build_encoder(
        EncoderConfig(name, pretrained=False, layer=layer, image_size=image_size)
    )
    assert (encoder.feature_dim, encoder.grid_size()) == (dim, grid)  # one forward at image_size
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 64, 64)).shape[2] == dim


def test_resnet_blocks_trunk_head_and_freezing():
    encoder = build_encoder(EncoderConfig("resnet18", pretrained=False, fine_tune_blocks=2))
    # stem + 2 blocks in each of layer1..layer4
    assert len(encoder.blocks) == 9 and encoder.block_names[-2:] == ("layer4.0", "layer4.1")
    trainable = {name.split(".")[1] for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"7", "8"}
    encoder.train()
    assert all(not m.training for m in encoder.modules() if isinstance(m, _BatchNorm))
    images = torch.randn(2, 3, 64, 64)
    trunk = encoder.forward_trunk(images)
    assert trunk.shape == (2, 256, 4, 4)  # layer3 output feeds the fine-tuned layer4
    torch.testing.assert_close(encoder.forward_head(trunk), encoder(images))


def test_preprocess_comes_from_the_weights():
    encoder = build_encoder(EncoderConfig("resnet50", pretrained=False, image_size=256))
    assert encoder.preprocess.mean == (0.485, 0.456, 0.406) and encoder.preprocess.image_size == 256


def test_missing_pretrained_weights_is_one_line_with_the_fix_and_no_download():
    assert not os.path.exists(hub_cache_path("resnet50")[0])  # TORCH_HOME is an empty tmp dir
    with pytest.raises(CheckpointError) as caught:
        build_encoder(EncoderConfig("resnet50"))
    message = str(caught.value)
    assert "\n" not in message
    assert "torchvision.models.get_model('resnet50', weights='DEFAULT')" in message
    assert "--encoder-weights PATH" in message


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_path_loads_exactly(tmp_path, suffix):
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    with torch.no_grad():
        source.bn1.running_mean.uniform_()  # buffers must come through too
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    encoder = build_encoder(EncoderConfig("resnet18", weights_path=str(path)))
    loaded = encoder.blocks.state_dict()
    assert torch.equal(loaded["0.0.weight"], source.conv1.weight)
    assert torch.equal(loaded["0.1.running_mean"], source.bn1.running_mean)
    assert torch.equal(loaded["8.conv2.weight"], source.layer4[1].conv2.weight)
    images = torch.randn(1, 3, 64, 64)
    source.eval()
    with torch.no_grad():
        body = torch.nn.Sequential(*list(source.children())[:-2])
        expected = body(images).flatten(2).transpose(1, 2)
        torch.testing.assert_close(encoder(images), expected)


def test_weights_found_in_the_hub_cache_are_used(tmp_path):
    import torchvision

    path, _ = hub_cache_path("resnet18")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), path)
    encoder = build_encoder(EncoderConfig("resnet18"))
    assert torch.equal(encoder.blocks[0][0].weight, source.conv1.weight)


def test_wrong_weights_file_is_one_line(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(CheckpointError) as caught:
        build_encoder(EncoderConfig("resnet18", weights_path=str(path)))
    assert "do not fit torchvision resnet18" in str(caught.value) and "\n" not in str(caught.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read encoder weights"):
        build_encoder(EncoderConfig("resnet18", weights_path=str(garbage)))


def test_unknown_layer_and_non_grid_models_are_refused():
    with pytest.raises(ConfigError, match="no layer 'layer2'"):
        build_encoder(EncoderConfig("resnet18", pretrained=False, layer="layer2"))
    assert "resnet152" in torchvision_backbones() and "vit_b_16" not in torchvision_backbones()
