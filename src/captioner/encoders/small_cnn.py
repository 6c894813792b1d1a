"""A small CNN trained from scratch with the captioner, for the built-in 64 x 64 ``scenes`` images.

Four conv blocks (conv 3x3 + BatchNorm + ReLU; the first three halve the size):
64 px -> 32 -> 16 -> 8, giving a 128 x 8 x 8 grid (64 regions; each region's receptive field,
38 px, covers one cell of the 3 x 3 scene grid with its borders). Convolutions do not know where
they are, yet captions say "left of" / "above": a learned position embedding is added to the grid
so each region carries its place. About 0.1 M parameters and 32 MFLOP an image: the demo trains
it on 20,000 images in minutes on a 2-core CPU.

Everything trains (no frozen trunk, BatchNorm trains normally); ``pretrained`` means nothing here,
and ``weights_path`` loads a state dict of this encoder. Knows nothing about the scenes generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.encoders.base import Encoder, EncoderConfig, ImagePreprocess, load_state_dict_file
from captioner.errors import CheckpointError, ConfigError

NAME = "small_cnn"
DEFAULT_IMAGE_SIZE = 64
CHANNELS = (16, 32, 64, 128)
FEATURE_DIM = CHANNELS[-1]
STRIDE = 8


def _conv_block(in_channels: int, out_channels: int, downsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if downsample:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNNEncoder(Encoder):
    LAYERS = {"final": f"{FEATURE_DIM} channels, 8x8 at 64 px (stride {STRIDE})"}

    def __init__(self, config: EncoderConfig) -> None:
        if config.layer not in (None, "final"):
            raise ConfigError(f"{NAME} has one layer, 'final'; got {config.layer!r}")
        if config.image_size % STRIDE:
            raise ConfigError(
                f"{NAME} needs an image_size divisible by {STRIDE}, got {config.image_size}"
            )
        config = EncoderConfig.from_dict({**config.to_dict(), "layer": "final"})
        blocks = []
        in_channels = 3
        for index, out_channels in enumerate(CHANNELS):
            blocks.append(
                _conv_block(in_channels, out_channels, downsample=index < len(CHANNELS) - 1)
            )
            in_channels = out_channels
        super().__init__(
            config,
            ImagePreprocess(config.image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            blocks,
            block_names=[f"conv{index + 1}" for index in range(len(blocks))],
            trainable_from_scratch=True,
        )
        grid = config.image_size // STRIDE
        self.position = nn.Parameter(torch.zeros(1, FEATURE_DIM, grid, grid))
        nn.init.trunc_normal_(self.position, std=0.02)
        if config.weights_path is not None:
            self._load(config.weights_path)

    def _load(self, path: str) -> None:
        try:
            self.load_state_dict(load_state_dict_file(path), strict=True)
        except RuntimeError as error:
            detail = str(error).strip().splitlines()[0]
            raise CheckpointError(f"encoder weights {path} do not fit {NAME}: {detail}") from None

    def forward_head_grid(self, trunk_activations: torch.Tensor) -> torch.Tensor:
        grid = super().forward_head_grid(trunk_activations)
        position = self.position
        if position.shape[-2:] != grid.shape[-2:]:
            position = F.interpolate(
                position, size=grid.shape[-2:], mode="bilinear", align_corners=False
            )
        return grid + position

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def weights_digest(self) -> str:
        import hashlib

        digest = hashlib.sha256(super().weights_digest().encode())
        digest.update(self.position.detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]


def small_cnn(config: EncoderConfig | None = None, **overrides: object) -> SmallCNNEncoder:
    """Build the scenes encoder: ``small_cnn()`` (64 px, 128 x 8 x 8 grid)."""
    values = (
        config.to_dict()
        if config is not None
        else {"name": NAME, "pretrained": False, "image_size": DEFAULT_IMAGE_SIZE}
    ) | overrides
    return SmallCNNEncoder(EncoderConfig.from_dict(values))
