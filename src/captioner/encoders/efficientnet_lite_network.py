"""The EfficientNet-Lite0/1/2 networks, written out: the same modules, names and maths as timm's
``tf_efficientnet_lite0`` / ``_lite1`` / ``_lite2``, without importing timm.

Importing timm imports torchvision's detection ops and with them ``torch._dynamo``: about 2 s
that every ``captioner caption`` paid before its first photo (BENCHMARKS.md). The network is
small enough to state here; ``tests/encoders/test_efficientnet_lite.py`` checks that its state
dict has timm's keys and shapes in timm's order and that both give the same features and
logits at several image sizes.

Lite0 (Tan & Le 2019; the "lite" edge variant): a stride-2 stem, seven stages of MBConv blocks
without squeeze-excitation, a 1x1 head conv to 1,280 channels and an ImageNet classifier. ReLU6
throughout, BatchNorm eps 1e-3, and TensorFlow's "SAME" padding: static for stride 1,
asymmetric (more on the bottom and right) and input-size dependent for stride 2. Lite1 and
Lite2 scale the middle stages deeper (and Lite2 wider) and keep the stem, the first and last
stage's depth and the 1,280-channel head: the "lite" rules, stated below as plain tables.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

Stage = tuple[str, int, int, int, int, int]
"""(block kind, repeats, kernel, stride, expansion, output channels)."""


def _stages(repeats: tuple[int, ...], channels: tuple[int, ...]) -> tuple[Stage, ...]:
    kinds = ("depthwise_separable",) + ("inverted_residual",) * 6
    kernels, strides, expansions = (3, 3, 5, 3, 5, 5, 3), (1, 2, 2, 2, 1, 2, 1), (1, 6, 6, 6, 6, 6, 6)
    return tuple(zip(kinds, repeats, kernels, strides, expansions, channels, strict=True))


# The variants' stages as timm builds them (width and depth multipliers already applied).
VARIANT_STAGES: dict[str, tuple[Stage, ...]] = {
    "lite0": _stages((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
    "lite1": _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    "lite2": _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for any input size: output size
    ceil(input / stride), the padding split with the extra pixel after (bottom, right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = []
        for size, kernel, stride, dilation in reversed(
            list(zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation))
        ):
            total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
            padding += [total // 2, total - total // 2]
        x = functional.pad(x, padding)
        return functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(in_channels, out_channels, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by ReLU6 (or nothing), holding the same tensors as BatchNorm2d."""

    def __init__(self, channels: int, activation: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv + BN + ReLU6, then a 1x1 projection + BN; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_dw = conv(in_channels, in_channels, kernel, stride, groups=in_channels)
        self.bn1 = BatchNormAct2d(in_channels)
        self.conv_pw = conv(in_channels, out_channels, 1)
        self.bn2 = BatchNormAct2d(out_channels, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion + BN + ReLU6, depthwise conv + BN + ReLU6, 1x1 projection + BN;
    residual when the stride is 1 and the channels stay."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = conv(in_channels, hidden, 1)
        self.bn1 = BatchNormAct2d(hidden)
        self.conv_dw = conv(hidden, hidden, kernel, stride, groups=hidden)
        self.bn2 = BatchNormAct2d(hidden)
        self.conv_pwl = conv(hidden, out_channels, 1)
        self.bn3 = BatchNormAct2d(out_channels, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """``conv_stem``/``bn1``, ``blocks`` (7 stages), ``conv_head``/``bn2``, ``classifier``: the
    attribute names of timm's model, which the encoder and the weight loading rely on."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in VARIANT_STAGES:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {', '.join(VARIANT_STAGES)}")
        self.variant = variant
        self.conv_stem = conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        stages = []
        channels = STEM_CHANNELS
        for kind, repeats, kernel, stride, expansion, out_channels in VARIANT_STAGES[variant]:
            blocks: list[nn.Module] = []
            for index in range(repeats):
                block_stride = stride if index == 0 else 1
                if kind == "depthwise_separable":
                    blocks.append(DepthwiseSeparableConv(channels, out_channels, kernel, block_stride))
                else:
                    blocks.append(InvertedResidual(channels, out_channels, kernel, block_stride, expansion))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(channels, HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean(dim=(2, 3)))

