"""EncoderConfig and ImagePreprocess: JSON round trip, validation, no crop, no flip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.encoders import EncoderConfig, ImagePreprocess
from captioner.errors import ConfigError


def test_config_round_trips_through_json():
    config = EncoderConfig(
        "resnet101",
        pretrained=False,
        weights_path="w.pth",
        layer="layer3",
        image_size=256,
        fine_tune_blocks=2,
        fine_tune_lr=3e-5,
    )
    assert EncoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "values, word",
    [
        ({"name": "x", "colour": 1}, "colour"),
        ({"pretrained": True}, "name"),
        ({"name": "x", "image_size": "224"}, "image_size"),
        ({"name": "x", "fine_tune_blocks": -1}, "fine_tune_blocks"),
        ({"name": "x", "pretrained": "yes"}, "pretrained"),
    ],
)
def test_bad_config_is_one_line_config_error(values, word):
    with pytest.raises(ConfigError) as caught:
        EncoderConfig.from_dict(values)
    assert word in str(caught.value) and "\n" not in str(caught.value)


def _left_red_right_blue(width: int, height: int) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


def test_preprocess_squeezes_whole_image_without_crop_or_flip():
    preprocess = ImagePreprocess(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    # A wide image with a thin green strip at its right edge: a centre crop would cut it away.
    pixels = np.asarray(_left_red_right_blue(400, 100)).copy()
    pixels[:, -20:] = (0, 255, 0)
    tensor = preprocess(Image.fromarray(pixels))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert tensor[0, :, 0].min() > 0.9  # left column red (not flipped)
    assert tensor[1, :, -1].min() > 0.9  # the edge strip survives (not cropped)
    assert tensor[2, :, 20].min() > 0.9  # right half blue
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_preprocess_normalises_with_its_mean_and_std():
    grey = Image.new("RGB", (50, 70), (51, 102, 204))
    tensor = ImagePreprocess(16, mean=(0.2, 0.4, 0.8), std=(0.1, 0.2, 0.4))(grey)
    torch.testing.assert_close(tensor, torch.zeros(3, 16, 16), atol=1e-6, rtol=0)


def test_preprocess_accepts_greyscale_and_antialiases():
    # A 1-pixel checkerboard shrunk 8x: antialiasing averages it to grey; point sampling would not.
    board = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    tensor = ImagePreprocess(32, mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(board))
    assert tensor.shape == (3, 32, 32)
    assert abs(tensor.mean().item() - 0.5) < 0.02 and tensor.std().item() < 0.05
