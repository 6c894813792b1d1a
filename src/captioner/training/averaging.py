"""An exponential moving average of the weights being trained (Polyak averaging).

Self-critical training's dev score swings by a percent or two from one epoch to the next while
its reward keeps climbing; the average of the last few hundred steps' weights is a smoother
policy than the weights of any one step. When ``optim.weight_average_decay`` is above 0, the loop
updates the average after every optimiser step, validates it and saves it as the run's weights;
the optimiser itself keeps training the raw weights.

The decay ramps up as TensorFlow's ``ExponentialMovingAverage`` does with ``num_updates``:
``min(decay, (1 + n) / (10 + n))`` at the n-th update, so that the first updates are not held
back by the starting weights (which, for fine-tuning, are the weights to move away from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from captioner.errors import CheckpointError

UPDATES_KEY = "updates"
SHADOW_PREFIX = "shadow."


class WeightAverage:
    """The moving average of a model's trainable parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie strictly between 0 and 1, got {decay}")
        self.decay = decay
        self.updates = 0
        self.parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().float().clone() for name, p in self.parameters.items()}

    def decay_at(self, update: int) -> float:
        """The decay used by the ``update``-th update (from 1)."""
        return min(self.decay, (1 + update) / (10 + update))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step)."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        for name, parameter in self.parameters.items():
            self.shadow[name].lerp_(parameter.detach().float(), weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; afterwards its own again."""
        with torch.no_grad():
            trained = {name: p.detach().clone() for name, p in self.parameters.items()}
            for name, parameter in self.parameters.items():
                parameter.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in self.parameters.items():
                    parameter.copy_(trained[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {UPDATES_KEY: torch.tensor(self.updates), **{SHADOW_PREFIX + n: t for n, t in self.shadow.items()}}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], source: object) -> None:
        """Restore ``state_dict()``'s tensors; ``source`` names the file in errors."""
        names = {n[len(SHADOW_PREFIX):] for n in tensors if n.startswith(SHADOW_PREFIX)}
        if (
            UPDATES_KEY not in tensors
            or names != set(self.shadow)
            or any(tensors[SHADOW_PREFIX + n].shape != self.shadow[n].shape for n in names)
        ):
            raise CheckpointError(
                f"{source} does not hold the weight average this run keeps (optim.weight_average_decay); "
                "resume with the settings it was saved with, or start a new run"
            )
        self.updates = int(tensors[UPDATES_KEY])
        for name in names:
            self.shadow[name].copy_(tensors[SHADOW_PREFIX + name])
