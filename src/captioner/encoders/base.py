"""What every image encoder is: a config, its own preprocessing, and a CNN cut into trunk + head.

An encoder turns a batch of preprocessed images ``(B, 3, H, W)`` into region features
``(B, R, D)``: the CNN's last spatial grid read row by row (``R = h * w``), which the decoder
attends over. The network is a list of blocks; the first blocks form a frozen *trunk* and the last
``fine_tune_blocks`` form the trainable *head*, so that fine-tuning can start from cached trunk
activations instead of running the whole CNN again.

This module knows nothing about particular architectures, files on disk, datasets or decoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from captioner.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderConfig:
    """Which encoder to build and how much of it to train; plain types only, so it round-trips JSON.

    ``layer`` picks the grid (``None`` means the encoder's default, its last grid); see each
    encoder's ``LAYERS``. ``fine_tune_blocks`` is how many of the last blocks train (0 = frozen);
    ``fine_tune_lr`` is their learning rate, kept separate from the decoder's.
    """

    name: str
    pretrained: bool = True
    weights_path: str | None = None
    layer: str | None = None
    image_size: int = 224
    fine_tune_blocks: int = 0
    fine_tune_lr: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"encoder name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.pretrained, bool):
            raise ConfigError(f"encoder pretrained must be true or false, got {self.pretrained!r}")
        if self.weights_path is not None and not isinstance(self.weights_path, str):
            self.weights_path = str(self.weights_path)  # accept a Path, store the JSON form
        if self.layer is not None and not isinstance(self.layer, str):
            raise ConfigError(f"encoder layer must be a string, got {self.layer!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ConfigError(f"encoder image_size must be an integer, got {self.image_size!r}")
        if self.image_size < 32:
            raise ConfigError(
                f"encoder image_size must be at least 32 pixels, got {self.image_size}"
            )
        if isinstance(self.fine_tune_blocks, bool) or not isinstance(self.fine_tune_blocks, int):
            raise ConfigError(
                f"encoder fine_tune_blocks must be an integer, got {self.fine_tune_blocks!r}"
            )
        if self.fine_tune_blocks < 0:
            raise ConfigError(f"encoder fine_tune_blocks must be >= 0, got {self.fine_tune_blocks}")
        if not isinstance(self.fine_tune_lr, int | float) or isinstance(self.fine_tune_lr, bool):
            raise ConfigError(f"encoder fine_tune_lr must be a number, got {self.fine_tune_lr!r}")
        self.fine_tune_lr = float(self.fine_tune_lr)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown encoder config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "name" not in values:
            raise ConfigError("encoder config needs a 'name' (e.g. efficientnet_lite0)")
        return cls(**values)


@dataclass(frozen=True)
class ImagePreprocess:
    """PIL image -> normalised ``FloatTensor (3, image_size, image_size)``.

    The whole image is squeezed to a square (no crop: captions mention things at the edges) with
    antialiased bilinear resampling; never flipped (captions say "left" and "right").
    """

    image_size: int
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            # PIL scales the filter support when shrinking, i.e. it antialiases.
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(self.image_size, self.image_size, 3).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (pixels.float().div_(255.0) - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}


class Encoder(nn.Module):
    """A CNN as a list of blocks: ``blocks[:split]`` is the trunk, ``blocks[split:]`` the head.

    Subclasses build the blocks and call ``super().__init__``. Pretrained encoders are frozen
    except for the head, and keep every BatchNorm in eval mode even under ``train()``: batch
    statistics of a captioning batch would wreck ImageNet statistics. Encoders trained from scratch
    (``trainable_from_scratch=True``) put every block in the head and train normally.

    The block list lives in one ``ModuleList`` so state-dict keys do not depend on where the
    trunk/head split is.
    """

    #: Grid layers this encoder offers, name -> short description (channels, grid at 224 px).
    LAYERS: Mapping[str, str] = {}

    def __init__(
        self,
        config: EncoderConfig,
        preprocess: ImagePreprocess,
        blocks: Sequence[nn.Module],
        *,
        block_names: Sequence[str] | None = None,
        trainable_from_scratch: bool = False,
        frozen_extras: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("an encoder needs at least one block")
        self.config = config
        self.preprocess = preprocess
        self.blocks = nn.ModuleList(blocks)
        self.block_names: tuple[str, ...] = tuple(
            block_names if block_names is not None else (str(i) for i in range(len(blocks)))
        )
        self.trainable_from_scratch = trainable_from_scratch
        # Modules kept beside the blocks (e.g. a classifier) that never train and never run in
        # forward(); registered so they move with .to() and are saved with the encoder.
        self._frozen_extra_names = tuple(frozen_extras or {})
        for name, module in (frozen_extras or {}).items():
            setattr(self, name, module)
        if trainable_from_scratch:
            self.split = 0
        else:
            if config.fine_tune_blocks > len(self.blocks):
                raise ConfigError(
                    f"encoder {config.name} (layer {config.layer}) has {len(self.blocks)} blocks; "
                    f"fine_tune_blocks={config.fine_tune_blocks} is too many"
                )
            self.split = len(self.blocks) - config.fine_tune_blocks
        self._shape_cache: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]]] = {}
        self._set_trainable()
        self.train()  # a new module is in training mode: apply the frozen-BatchNorm rule from the start

    # -- structure ---------------------------------------------------------------------------

    @property
    def trunk(self) -> nn.Sequential:
        """The frozen blocks (a view over ``blocks``; empty for encoders trained from scratch)."""
        return nn.Sequential(*self.blocks[: self.split])

    @property
    def head(self) -> nn.Sequential:
        """The trainable blocks (a view over ``blocks``)."""
        return nn.Sequential(*self.blocks[self.split :])

    @property
    def frozen(self) -> bool:
        """True when no parameter of this encoder trains."""
        return not any(p.requires_grad for p in self.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters, for an optimizer group with ``config.fine_tune_lr``."""
        return [
            p for block in self.blocks[self.split :] for p in block.parameters() if p.requires_grad
        ]

    def _set_trainable(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for block in self.blocks[self.split :]:
            for parameter in block.parameters():
                parameter.requires_grad_(True)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if mode and not self.trainable_from_scratch:
            for block in self.blocks[: self.split]:
                block.eval()
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        for name in self._frozen_extra_names:
            getattr(self, name).eval()
        return self

    # -- forward -----------------------------------------------------------------------------

    def forward_trunk(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> trunk activations ``(B, C, h', w')`` (images themselves if empty)."""
        activations = images
        # The trunk never trains: keep autograd from storing its activations.
        with torch.no_grad():
            for block in self.blocks[: self.split]:
                activations = block(activations)
        return activations

    def forward_head_grid(self, trunk_activations: torch.Tensor) -> torch.Tensor:
        """Trunk activations -> the feature grid ``(B, D, h, w)``."""
        grid = trunk_activations
        for block in self.blocks[self.split :]:
            grid = block(grid)
        return grid

    def forward_head(self, trunk_activations: torch.Tensor) -> torch.Tensor:
        """Trunk activations -> region features ``(B, R, D)``, regions in row-major order."""
        return grid_to_regions(self.forward_head_grid(trunk_activations))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images ``(B, 3, H, W)`` -> region features ``(B, R, D)``."""
        return self.forward_head(self.forward_trunk(images))

    # -- shapes ------------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        """D, the size of one region feature."""
        return self._shapes(self.config.image_size)[1][0]

    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        """(h, w) of the region grid for square inputs of ``image_size`` (default: the config's)."""
        _, height, width = self._shapes(image_size or self.config.image_size)[1]
        return height, width

    def num_regions(self, image_size: int | None = None) -> int:
        height, width = self.grid_size(image_size)
        return height * width

    def trunk_shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """(C, h', w') of ``forward_trunk`` output for one image."""
        return self._shapes(image_size or self.config.image_size)[0]

    def _shapes(self, image_size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """((C, h', w') of the trunk output, (D, h, w) of the grid), found by one dummy forward."""
        if image_size not in self._shape_cache:
            parameter = next(self.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            modes = {module: module.training for module in self.modules()}
            try:
                self.eval()  # a dummy batch must not touch BatchNorm running statistics
                with torch.inference_mode():
                    dummy = torch.zeros(1, 3, image_size, image_size, device=device)
                    trunk = self.forward_trunk(dummy)
                    grid = self.forward_head_grid(trunk)
            finally:
                for module, was_training in modes.items():
                    module.training = was_training
            trunk_shape = tuple(int(n) for n in trunk.shape[1:])
            grid_shape = tuple(int(n) for n in grid.shape[1:])
            self._shape_cache[image_size] = (trunk_shape, grid_shape)  # type: ignore[assignment]
        return self._shape_cache[image_size]

    # -- identity ----------------------------------------------------------------------------

    def weights_digest(self) -> str:
        """A short hash of every tensor that shapes the features, to tell two encoders apart."""
        digest = hashlib.sha256()
        for name, tensor in self.blocks.state_dict().items():
            digest.update(name.encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
        return digest.hexdigest()[:16]


def grid_to_regions(grid: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` -> ``(B, h*w, D)``, row-major over the grid."""
    return grid.flatten(2).transpose(1, 2)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt`` state dict without executing pickled code."""
    from captioner.errors import CheckpointError

    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"encoder weights file {path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad file for the user
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise CheckpointError(
            f"cannot read encoder weights {path} as a state dict ({first_line}); "
            "pass a .pth or .safetensors file of tensors"
        ) from None
    # Training scripts often wrap the tensors: {"state_dict": {...}} or {"model": {...}}.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"encoder weights {path} is not a state dict of tensors")
    return dict(state)
