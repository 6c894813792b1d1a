"""Several trained decoders captioning together: their next-word distributions mixed at every step.

Owns: ``EncoderEnsemble`` (each distinct encoder run once per photo, their region grids
concatenated along the feature axis) and ``DecoderEnsemble`` (the decoder interface the searches
use, ``init_state`` / ``project_regions`` / ``step``, over members that each read their own
encoder's slice of those features). Together they make a ``CaptioningModel`` that every search,
the guidance and the attention figures use unchanged. Knows nothing of files: making and
loading ensemble directories is ``captioner.training.ensemble``'s.

The mixture is of probabilities, p(w) = sum_i weight_i p_i(w): a word that any member finds
likely stays likely, where a product (mean of log-probabilities) lets one member veto it. The
attention map of a word is the members' maps averaged with the same weights (all encoders must
give the same grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from captioner.encoders.base import Encoder, ImagePreprocess
from captioner.models.decoder import DecoderState, ShowAttendTellDecoder, StepOutput


class _Channels(nn.Module):
    """Selects channels ``start:stop`` of a (B, C, H, W) grid."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid[:, self.start : self.stop]


class EncoderEnsemble(nn.Module):
    """Encoders that see the same preprocessed photo; (B, R, sum of D_i) region features out.

    ``classifier_tail`` is the first member's that has one (EfficientNet-Lite's ImageNet head),
    reading that member's channels: classifier guidance works as with that encoder alone.
    """

    def __init__(self, encoders: Sequence[Encoder], image_size: int) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("an ensemble needs at least one encoder")
        first = encoders[0]
        for encoder in encoders[1:]:
            if encoder.preprocess != first.preprocess:
                raise ValueError(
                    f"encoders preprocess photos differently ({first.preprocess} vs {encoder.preprocess}); "
                    "an ensemble's encoders must share one input"
                )
            if encoder.grid_size(image_size) != first.grid_size(image_size):
                raise ValueError(
                    f"encoders give {first.grid_size(image_size)} and {encoder.grid_size(image_size)} grids at "
                    f"{image_size} px; an ensemble's attention maps need one grid"
                )
        self.members = nn.ModuleList(encoders)
        self.image_size = image_size
        self.offsets = [0]
        for encoder in encoders:
            self.offsets.append(self.offsets[-1] + encoder.feature_dim)
        self.classifier_tail: nn.Sequential | None = None
        for index, encoder in enumerate(encoders):
            tail = getattr(encoder, "classifier_tail", None)
            if isinstance(tail, nn.Sequential):
                self.classifier_tail = nn.Sequential(_Channels(self.offsets[index], self.offsets[index + 1]), *tail)
                break

    @property
    def preprocess(self) -> ImagePreprocess:
        return self.members[0].preprocess

    @property
    def feature_dim(self) -> int:
        return self.offsets[-1]

    def feature_slice(self, index: int) -> slice:
        """Where member ``index``'s features sit in the concatenated regions."""
        return slice(self.offsets[index], self.offsets[index + 1])

    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        return self.members[0].grid_size(image_size or self.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(images) for encoder in self.members], dim=2)


class DecoderEnsemble(nn.Module):
    """``ShowAttendTellDecoder``'s search interface over several decoders of one vocabulary.

    Member i reads ``feature_slices[i]`` of the regions and weighs ``weights[i]`` (normalised to
    sum to 1). Its LSTM state and projected regions are kept side by side with the others' along
    the last dimension, so that a search reorders and drops them as it does one decoder's.
    Inference only: the members are trained on their own.
    """

    def __init__(
        self,
        members: Sequence[ShowAttendTellDecoder],
        feature_slices: Sequence[slice],
        weights: Sequence[float],
    ) -> None:
        super().__init__()
        if not members or len(members) != len(feature_slices) or len(members) != len(weights):
            raise ValueError(
                f"an ensemble needs one feature slice and one weight per decoder: "
                f"{len(members)} decoders, {len(feature_slices)} slices, {len(weights)} weights"
            )
        if any(not math.isfinite(w) or w <= 0 for w in weights):
            raise ValueError(f"ensemble weights must be positive, got {list(weights)}")
        vocab_sizes = {member.vocab_size for member in members}
        if len(vocab_sizes) != 1:
            raise ValueError(f"decoders of an ensemble must share one vocabulary; sizes {sorted(vocab_sizes)}")
        self.members = nn.ModuleList(members)
        self.feature_slices = list(feature_slices)
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self._log_weights = [math.log(w) for w in self.weights]
        self.vocab_size = members[0].vocab_size
        self.feature_dim = max(s.stop for s in self.feature_slices)
        self._hidden_sizes = [member.config.hidden_dim for member in members]
        self._projected_widths: list[int] = []

    @property
    def bfloat16_products(self) -> bool:
        return all(member.bfloat16_products for member in self.members)

    @bfloat16_products.setter
    def bfloat16_products(self, value: bool) -> None:
        for member in self.members:
            member.bfloat16_products = value

    def _regions(self, regions: torch.Tensor, index: int) -> torch.Tensor:
        return regions[..., self.feature_slices[index]]

    def project_regions(self, regions: torch.Tensor, with_context_terms: bool = False) -> torch.Tensor:
        parts = [
            member.project_regions(self._regions(regions, i), with_context_terms=with_context_terms)
            for i, member in enumerate(self.members)
        ]
        # Widths depend on ``with_context_terms``; a search projects once before its steps.
        self._projected_widths = [part.size(2) for part in parts]
        return torch.cat(parts, dim=2)

    def init_state(self, regions: torch.Tensor) -> DecoderState:
        states = [member.init_state(self._regions(regions, i)) for i, member in enumerate(self.members)]
        return torch.cat([h for h, _ in states], dim=1), torch.cat([c for _, c in states], dim=1)

    def step(
        self,
        previous_words: torch.Tensor,
        state: DecoderState,
        regions: torch.Tensor,
        projected_regions: torch.Tensor,
    ) -> StepOutput:
        """(N,) previous words -> (N, V) log-probabilities of the mixture (already normalised, so
        that a search's log-softmax leaves them as they are)."""
        hidden = state[0].split(self._hidden_sizes, dim=1)
        cell = state[1].split(self._hidden_sizes, dim=1)
        projected = projected_regions.split(self._projected_widths, dim=2)
        outputs = [
            member.step(previous_words, (hidden[i], cell[i]), self._regions(regions, i), projected[i])
            for i, member in enumerate(self.members)
        ]
        log_probs = torch.stack(
            [torch.log_softmax(out.logits.float(), dim=-1) + w for out, w in zip(outputs, self._log_weights)]
        )
        alpha = sum(out.alpha.float() * w for out, w in zip(outputs, self.weights))
        new_state = (
            torch.cat([out.state[0] for out in outputs], dim=1),
            torch.cat([out.state[1] for out in outputs], dim=1),
        )
        return StepOutput(torch.logsumexp(log_probs, dim=0), new_state, alpha)  # type: ignore[arg-type]
