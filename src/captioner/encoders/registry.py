"""Encoder names -> builders: the one place that turns an ``EncoderConfig`` into an ``Encoder``."""

from __future__ import annotations

from captioner.encoders.base import Encoder, EncoderConfig
from captioner.encoders.efficientnet_lite import VARIANTS as EFFICIENTNET_LITES
from captioner.encoders.efficientnet_lite import EfficientNetLiteEncoder
from captioner.errors import ConfigError

OWN_ENCODERS = (*EFFICIENTNET_LITES, "small_cnn")


def available_encoders() -> list[str]:
    """Every name ``build_encoder`` accepts: the built-in ones, then torchvision backbones."""
    from captioner.encoders.torchvision import torchvision_backbones

    return list(OWN_ENCODERS) + torchvision_backbones()


def build_encoder(config: EncoderConfig) -> Encoder:
    """Build the encoder ``config`` names (weights loaded, trunk frozen as configured)."""
    if config.name in EFFICIENTNET_LITES:
        return EfficientNetLiteEncoder(config)
    if config.name == "small_cnn":
        from captioner.encoders.small_cnn import SmallCNNEncoder

        return SmallCNNEncoder(config)
    from captioner.encoders.torchvision import TorchvisionEncoder, torchvision_backbones

    if config.name in torchvision_backbones():
        return TorchvisionEncoder(config)
    raise ConfigError(
        f"unknown encoder {config.name!r}; choose one of {', '.join(available_encoders())}"
    )
