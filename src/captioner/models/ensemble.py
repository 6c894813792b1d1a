"""Several trained decoders captioning together: their next-word distributions mixed at every step.

Owns: ``EncoderEnsemble`` (each distinct encoder run once per photo, their region grids
concatenated along the feature axis) and ``DecoderEnsemble`` (the decoder interface the searches
use, ``begin`` (or ``init_state`` / ``project_regions``) / ``step``, over members that each read their own
encoder's slice of those features). Together they make a ``CaptioningModel`` that every search,
the guidance and the attention figures use unchanged. Knows nothing of files: making and
loading ensemble directories is ``captioner.training.ensemble``'s.

The mixture is of probabilities, p(w) = sum_i weight_i p_i(w): a word that any member finds
likely stays likely, where a product (mean of log-probabilities) lets one member veto it. The
attention map of a word is the members' maps averaged with the same weights (all encoders must
give the same grid).

Members of one shape (the shipped ensemble's) decode small searches in lockstep: their
projected regions are stacked member by member, and a step runs each elementwise operation once
over all members instead of once per member, leaving separate only the matrix products, which
have separate weights. The same maths to float rounding; a photo's search ~20% faster on the
2-core CPU (BENCHMARKS.md), where a step's ~40 small operations per member cost as much as its
products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from captioner.encoders.base import Encoder, ImagePreprocess
from captioner.models.attention import ENERGY_GROUP_VALUES
from captioner.models.decoder import HIDDEN_BOUND, DecoderState, ShowAttendTellDecoder, StepOutput
from captioner.models.packed_linear import PreparedLinear


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


@dataclass
class _LockstepPlan:
    """A lockstep search's weights and tables, one entry per member where they differ."""

    precision: str
    hidden_maps: list[PreparedLinear]
    hidden_to_embed: list[PreparedLinear]
    output: list[PreparedLinear]
    word_gates: list[torch.Tensor]
    """Each member's (V, 4H) word-gate table (``ShowAttendTellDecoder._word_gate_table``)."""
    embeddings: list[torch.Tensor]
    """Each member's (V, E) embeddings."""
    score_weights: torch.Tensor
    """(M, A), doubled"""
    weights: torch.Tensor
    """(M,)"""
    log_weights: torch.Tensor
    """(1, M, 1)"""


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
        self._plan: _LockstepPlan | None = None
        self.lockstep = True
        """Decode small searches with same-shaped members in lockstep (module docstring); False
        steps each member on its own, for comparisons."""

    @property
    def product_precision(self) -> str:
        return self.members[0].product_precision

    @product_precision.setter
    def product_precision(self, value: str) -> None:
        for member in self.members:
            member.product_precision = value

    def _regions(self, regions: torch.Tensor, index: int) -> torch.Tensor:
        return regions[..., self.feature_slices[index]]

    @property
    def _stackable(self) -> bool:
        """Whether the members can decode in lockstep: same sizes, so that their projected
        regions and states line up."""
        shapes = {
            (m.config.embed_dim, m.config.hidden_dim, m.config.attention_dim, m.config.deep_output)
            for m in self.members
        }
        return self.lockstep and len(self.members) > 1 and len(shapes) == 1

    def project_regions(self, regions: torch.Tensor, with_context_terms: bool = False) -> torch.Tensor:
        """(B, R, D) -> the members' projected regions: (B, R, sum of widths) side by side, or,
        for a lockstep search (same-shaped members, context terms, no autograd), (B, M x R, W)
        member by member. ``step`` tells the two apart by the second size."""
        return self._joined_projections([
            member.project_regions(self._regions(regions, i), with_context_terms=with_context_terms)
            for i, member in enumerate(self.members)
        ], with_context_terms)

    def begin(self, regions: torch.Tensor, with_context_terms: bool = False) -> tuple[torch.Tensor, DecoderState]:
        """``project_regions`` and ``init_state`` together, each member's regions embedded once."""
        starts = [member.begin(self._regions(regions, i), with_context_terms) for i, member in enumerate(self.members)]
        return self._joined_projections([p for p, _ in starts], with_context_terms), self._joined_states(
            [s for _, s in starts]
        )

    def _joined_projections(self, parts: list[torch.Tensor], with_context_terms: bool) -> torch.Tensor:
        # Widths depend on ``with_context_terms``; a search projects once before its steps.
        self._projected_widths = [part.size(2) for part in parts]
        if with_context_terms and self._stackable and not torch.is_grad_enabled():
            self._plan = self._lockstep_plan()
            return torch.cat(parts, dim=1)
        return torch.cat(parts, dim=2)

    def init_state(self, regions: torch.Tensor) -> DecoderState:
        return self._joined_states([member.init_state(self._regions(regions, i)) for i, member in enumerate(self.members)])

    @staticmethod
    def _joined_states(states: list[DecoderState]) -> DecoderState:
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
        if projected_regions.size(1) != regions.size(1):
            return self._lockstep_step(previous_words, state, regions.size(1), projected_regions)
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

    def _lockstep_step(
        self, previous_words: torch.Tensor, state: DecoderState, region_count: int, projected_regions: torch.Tensor
    ) -> StepOutput:
        """``step`` for members of one shape over (B, M x R, A + 4H [+ E]) projected regions:
        ``ShowAttendTellDecoder._decoding_step`` with context terms, each elementwise operation
        once over an (N, M, ...) stack of the members' values."""
        members, count = self.members, len(self.members)
        config = members[0].config
        plan = self._plan if self._plan is not None and self._plan.precision == self.product_precision else None
        plan = plan or self._lockstep_plan()
        images = projected_regions.size(0)
        projected = projected_regions.view(images, count, region_count, -1)  # (B, M, R, W)
        keys, terms = projected.split([config.attention_dim, projected.size(3) - config.attention_dim], dim=3)
        rows = previous_words.size(0)
        per_image = rows // images
        hidden, cell = (part.reshape(rows, count, config.hidden_dim) for part in state)
        stacked = torch.stack([product(hidden[:, i]) for i, product in enumerate(plan.hidden_maps)], dim=1)
        query, hidden_gates, gate_logit = stacked.split([config.attention_dim, 4 * config.hidden_dim, 1], dim=2)
        # (N, M, 4H): one lookup per member's table (a stacked copy of the tables would take
        # another ~50 MB and look up no faster).
        word_gates = torch.stack([table[previous_words] for table in plan.word_gates], dim=1)

        # Attention, per image and member: (B, M, K, R) weights. tanh(x) = 2 sigmoid(2x) - 1, and
        # the constants that leaves (and the score's bias) are the same for every region, so the
        # softmax over regions drops them.
        # A few images at a time, so that the (images, M, K, R, A) temporary stays in cache.
        queries = query.view(images, per_image, count, -1).transpose(1, 2).unsqueeze(3)  # (B, M, K, 1, A)
        score_weights = plan.score_weights.view(1, count, 1, 1, -1)
        group = max(1, ENERGY_GROUP_VALUES // (count * per_image * region_count * config.attention_dim))
        energies = torch.cat([
            (keys[start : start + group].unsqueeze(2) + queries[start : start + group])
            .mul_(2.0).sigmoid_().mul_(score_weights).sum(dim=4)
            for start in range(0, max(images, 1), group)
        ])  # (B, M, K, R)
        alpha = torch.softmax(energies.float(), dim=3).to(projected_regions.dtype)
        weighted = torch.bmm(
            alpha.view(images * count, per_image, region_count),
            terms.reshape(images * count, region_count, terms.size(3)),
        )  # (B x M, K, 4H [+ E])
        weighted = weighted.view(images, count, per_image, -1).transpose(1, 2).reshape(rows, count, -1)
        context = torch.sigmoid(gate_logit) * weighted
        context_sizes = [4 * config.hidden_dim] + ([config.embed_dim] if config.deep_output else [])
        context_parts = context.split(context_sizes, dim=2)

        gates = word_gates + context_parts[0] + hidden_gates
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=2)
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        if config.deep_output:
            from_hidden = torch.stack([product(hidden[:, i]) for i, product in enumerate(plan.hidden_to_embed)], dim=1)
            embedded = torch.stack([table[previous_words] for table in plan.embeddings], dim=1)  # (N, M, E)
            outputs = embedded + from_hidden + context_parts[1]
        else:
            outputs = hidden
        logits = torch.stack([product(outputs[:, i]) for i, product in enumerate(plan.output)], dim=1)  # (N, M, V)
        log_probs = torch.log_softmax(logits.float(), dim=2).add_(plan.log_weights)
        mixed_alpha = torch.einsum("bmkr,m->bkr", alpha.float(), plan.weights).reshape(rows, -1)
        new_state = (hidden.reshape(rows, -1), cell.reshape(rows, -1))
        return StepOutput(torch.logsumexp(log_probs, dim=1), new_state, mixed_alpha)

    def _lockstep_plan(self) -> _LockstepPlan:
        """What a lockstep search's steps read, looked up once per search."""
        members = self.members
        device = members[0].output.weight.device
        precision = self.product_precision
        deep_output = members[0].config.deep_output
        return _LockstepPlan(
            precision=precision,
            hidden_maps=[PreparedLinear(*m._hidden_maps(), precision, HIDDEN_BOUND) for m in members],
            hidden_to_embed=[
                PreparedLinear(m.hidden_to_embed.weight, m.hidden_to_embed.bias, precision, HIDDEN_BOUND)
                for m in members
            ] if deep_output else [],
            output=[
                PreparedLinear(m.output.weight, m.output.bias, precision, None if deep_output else HIDDEN_BOUND)
                for m in members
            ],
            word_gates=[m._word_gate_table() for m in members],
            embeddings=[m.embedding.weight for m in members],
            score_weights=2.0 * torch.cat([m.attention.score.weight for m in members]),
            weights=torch.tensor(self.weights, device=device),
            log_weights=torch.tensor(self._log_weights, device=device).view(1, -1, 1),
        )
