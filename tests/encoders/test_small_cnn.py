"""The scenes CNN: 128 x 8 x 8 at 64 px, fully trainable, and aware of where each region is."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from captioner.encoders import EncoderConfig, build_encoder
from captioner.encoders.small_cnn import small_cnn
from captioner.errors import ConfigError


def test_grid_and_preprocess():
    encoder = small_cnn()
    assert encoder.config.image_size == 64 and encoder.preprocess.mean == (0.5, 0.5, 0.5)
    assert (encoder.feature_dim, encoder.grid_size(), encoder.grid_size(32)) == (
        128,
        (8, 8),
        (4, 4),
    )
    assert encoder(torch.randn(3, 3, 64, 64)).shape == (3, 64, 128)
    assert encoder(torch.randn(1, 3, 32, 32)).shape == (1, 16, 128)


def test_everything_trains():
    encoder = build_encoder(EncoderConfig("small_cnn", image_size=64))
    encoder.train()
    assert not encoder.frozen and encoder.trainable_from_scratch
    assert len(encoder.head_parameters()) == len(list(encoder.parameters()))
    assert all(m.training for m in encoder.modules() if isinstance(m, _BatchNorm))
    encoder(torch.randn(4, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_regions_know_their_position():
    # One square, then the same square moved 16 px (two regions) right. Convolutions alone give
    # the moved region exactly the features of the original one (both receptive fields lie inside
    # the image); the position embedding must make them differ.
    encoder = small_cnn().eval()
    here = torch.full((1, 3, 64, 64), -1.0)
    here[:, 0, 24:40, 16:32] = 1.0
    moved = here.roll(16, dims=-1)
    with torch.no_grad():
        difference = (
            encoder.forward_head_grid(here)[0, :, 3, 3]
            - encoder.forward_head_grid(moved)[0, :, 3, 5]
        )
        assert difference.abs().max() > 1e-2
        torch.nn.init.zeros_(encoder.position)
        torch.testing.assert_close(
            encoder.forward_head_grid(here)[0, :, 3, 3],
            encoder.forward_head_grid(moved)[0, :, 3, 5],
        )


def test_bad_layer_and_size():
    with pytest.raises(ConfigError):
        small_cnn(layer="stage5")
    with pytest.raises(ConfigError, match="divisible by 8"):
        small_cnn(image_size=60)
