from __future__ import annotations

import pytest

from captioner.encoders import EncoderConfig, available_encoders, build_encoder
from captioner.errors import ConfigError


def test_available_encoders_lists_own_and_torchvision_names():
    names = available_encoders()
    assert names[:4] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "small_cnn"]
    assert {"resnet50", "resnet101", "resnet152", "mobilenet_v3_large"} <= set(names)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError) as caught:
        build_encoder(EncoderConfig("inception_v9"))
    message = str(caught.value)
    assert "inception_v9" in message and "efficientnet_lite0" in message and "resnet50" in message
    assert "\n" not in message


def test_an_efficientnet_lite_that_does_not_exist_is_unknown():
    with pytest.raises(ConfigError, match="unknown encoder 'efficientnet_lite7'"):
        build_encoder(EncoderConfig("efficientnet_lite7"))
