"""Any torchvision classification CNN as a region-grid encoder (ResNets, MobileNets, ...).

The network comes from ``torchvision.models.get_model(name, weights=None)``; its classifier is
dropped and the last spatial grid kept (ResNet-50/101/152: ``layer4``, 2048 x 7 x 7 at 224 px;
``layer="layer3"`` gives 1024 x 14 x 14). Pretrained weights are read only from disk: the user's
torch hub cache (where torchvision puts them after one online run) or ``weights_path``. Nothing is
ever downloaded, and a "pretrained" encoder never silently falls back to random weights.
Preprocessing (mean/std) comes from the weights' own transforms.

Blocks for fine-tuning: the stem, then every residual/inverted-residual block (ResNet, RegNet,
EfficientNet, ShuffleNet), or each module of ``features`` (MobileNet, VGG, DenseNet, ConvNeXt).
Vision transformers and Inception-style networks are not grids of this kind and are not offered.
Knows nothing about datasets, caches or decoders.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from captioner.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderConfig,
    ImagePreprocess,
    load_state_dict_file,
)
from captioner.errors import CheckpointError, ConfigError

_RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
_SUPPORTED_PREFIXES = _RESNET_PREFIXES + (
    "regnet_",
    "mobilenet_",
    "efficientnet_",
    "mnasnet",
    "vgg",
    "densenet",
    "convnext_",
    "shufflenet_v2",
    "alexnet",
    "squeezenet",
)


def torchvision_backbones() -> list[str]:
    """Names of the torchvision classification models this module can turn into a grid."""
    import torchvision.models

    return [
        name
        for name in torchvision.models.list_models(module=torchvision.models)
        if name.startswith(_SUPPORTED_PREFIXES)
    ]


def _flatten(container: nn.Module) -> list[nn.Module]:
    """Children of ``container``, with plain ``nn.Sequential`` stages opened into their blocks."""
    blocks: list[nn.Module] = []
    for child in container.children():
        if type(child) is nn.Sequential:
            blocks.extend(child.children())
        else:
            blocks.append(child)
    return blocks


def _resnet_blocks(model: nn.Module, layer: str) -> tuple[list[nn.Module], list[str]]:
    blocks: list[nn.Module] = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)]
    names = ["stem"]
    last_stage = {"layer4": 4, "layer3": 3}[layer]
    for stage in range(1, last_stage + 1):
        for index, block in enumerate(getattr(model, f"layer{stage}")):
            blocks.append(block)
            names.append(f"layer{stage}.{index}")
    return blocks, names


def _generic_blocks(name: str, model: nn.Module) -> list[nn.Module]:
    if name.startswith("regnet_"):
        return [model.stem] + [block for stage in model.trunk_output for block in stage]
    if name.startswith("shufflenet_v2"):
        blocks: list[nn.Module] = [model.conv1, model.maxpool]
        for stage in (model.stage2, model.stage3, model.stage4):
            blocks.extend(stage)
        return blocks + [model.conv5]
    if name.startswith("mnasnet"):
        return _flatten(model.layers)
    if name.startswith("densenet"):
        # torchvision applies this ReLU in forward(), after ``features``.
        return list(model.features.children()) + [nn.ReLU()]
    return _flatten(model.features)


def hub_cache_path(name: str) -> tuple[str, object]:
    """(file the default weights of ``name`` would occupy in the torch hub cache, the weights enum)."""
    import torchvision.models

    weights = torchvision.models.get_model_weights(name).DEFAULT
    filename = os.path.basename(weights.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename), weights


def _densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Published DenseNet files use "norm.1" where the module tree says "norm1" (torchvision fixes
    # this the same way when it loads them).
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )
    renamed = {}
    for key, tensor in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = tensor
    return renamed


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    if name.startswith("densenet"):
        state = _densenet_keys(state)
    missing, unexpected = (
        sorted(set(model.state_dict()) - set(state)),
        sorted(set(state) - set(model.state_dict())),
    )
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointError(
            f"encoder weights {source} do not fit torchvision {name}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors (e.g. {example}); pass a state dict of {name}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"encoder weights {source} do not fit torchvision {name}: {detail}"
        ) from None


class TorchvisionEncoder(Encoder):
    """A torchvision CNN without its classifier; regions are its last feature grid."""

    LAYERS = {
        "final": "the network's last feature grid (ResNet-50/101/152: 2048 x 7x7 at 224 px)",
        "layer3": "ResNets only: 1024 x 14x14 at 224 px (ResNet-18/34: 256 x 14x14)",
    }

    def __init__(self, config: EncoderConfig) -> None:
        import torchvision.models

        name = config.name
        if name not in torchvision_backbones():
            raise ConfigError(
                f"unknown torchvision backbone {name!r}; choose one of {', '.join(torchvision_backbones())}"
            )
        is_resnet = name.startswith(_RESNET_PREFIXES)
        layer = config.layer or "final"
        if is_resnet and layer == "final":
            layer = "layer4"
        allowed = ("final", "layer4", "layer3") if is_resnet else ("final",)
        if layer not in allowed:
            raise ConfigError(
                f"torchvision {name} has no layer {config.layer!r}; choose one of {', '.join(allowed)}"
            )
        config = EncoderConfig.from_dict({**config.to_dict(), "layer": layer})

        model = torchvision.models.get_model(name, weights=None)
        cache_file, default_weights = hub_cache_path(name)
        if config.weights_path is not None:
            _load_into(model, load_state_dict_file(config.weights_path), config.weights_path, name)
        elif config.pretrained:
            if not os.path.isfile(cache_file):
                raise CheckpointError(
                    f"no offline ImageNet weights for {name} (looked for {cache_file}): run once with "
                    f"internet: python -c \"import torchvision; torchvision.models.get_model('{name}', "
                    "weights='DEFAULT')\", or pass --encoder-weights PATH"
                )
            _load_into(model, load_state_dict_file(cache_file), cache_file, name)

        if is_resnet:
            blocks, names = _resnet_blocks(model, layer)
        else:
            blocks = _generic_blocks(name, model)
            names = [f"{index}.{type(block).__name__}" for index, block in enumerate(blocks)]
        transforms = default_weights.transforms()
        mean = tuple(getattr(transforms, "mean", IMAGENET_MEAN))
        std = tuple(getattr(transforms, "std", IMAGENET_STD))
        super().__init__(
            config, ImagePreprocess(config.image_size, mean, std), blocks, block_names=names
        )


def torchvision_encoder(name: str, **overrides: object) -> TorchvisionEncoder:
    """Build e.g. ``torchvision_encoder("resnet101", pretrained=False)``."""
    return TorchvisionEncoder(EncoderConfig.from_dict({"name": name, **overrides}))
