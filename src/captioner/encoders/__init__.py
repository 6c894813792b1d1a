"""Image encoders: CNNs that turn a picture into a grid of region features, and their cache.

Owns ``EncoderConfig``, each encoder's own preprocessing (``ImagePreprocess``), the encoder
families (EfficientNet-Lite0 offline weights, torchvision backbones, a small CNN for ``scenes``),
``build_encoder`` and the on-disk feature cache. Reads ``captioner.data`` records and images;
knows nothing about decoders, training loops or metrics.
"""

from captioner.encoders.base import Encoder, EncoderConfig, ImagePreprocess
from captioner.encoders.registry import available_encoders, build_encoder

__all__ = ["Encoder", "EncoderConfig", "ImagePreprocess", "available_encoders", "build_encoder"]
