"""The Show, Attend and Tell decoder: an LSTM that writes one word at a time with soft attention.

Xu et al. 2015, "Show, Attend and Tell": the initial LSTM state comes from the mean region
feature; at every step additive attention over the regions gives a context vector, scaled by a
learned gate beta; the LSTM reads the previous word's embedding and that context; the word
distribution is the "deep output" L_o(E y_{t-1} + L_h h_t + L_z z_t).

Three ways in: ``forward`` (teacher forcing over whole captions, for training; its recurrence
and that recurrence's backward live in ``recurrence``), ``step`` (one word for a batch of
partial captions, for the search strategies in ``decoding``) and ``sample_recorded`` (captions
sampled for self-critical training, recorded so that ``forward`` need not run them again).

Decoding can precompute the context terms (``project_regions(..., with_context_terms=True)``):
the gate beta is a scalar, so the context z_t = beta_t sum_i alpha_ti a_i reaches the rest of
the model only through two linear maps (the LSTM's input weights and L_z). Mapping every region
through them once per image turns each step's two largest matrix products (1,280-d context to
4 x hidden gates and to the embedding) into a weighted sum of R precomputed rows, and the word
embedding's share of the gates becomes a table lookup. The outputs are the same up to float
rounding; a step of a small search (one image's beams) reads far fewer weights, which is what
it waits for on a CPU (BENCHMARKS.md has the timings).

Without autograd, the maps that read the same input are stacked into one weight (the previous
hidden state's three, the regions' three, the initial state's two) and run through
``packed_linear``; these derived weights are cached and rebuilt when a parameter changes. They
cost memory beside the parameters (~70 MB for the shipped model, counting oneDNN's copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from captioner.models import packed_linear
from captioner.models.attention import SoftAttention, rows_per_image, weighted_sum
from captioner.models.recurrence import Operands, PackedSteps, Recording, attention_lstm, compute_dtype

_Derived = TypeVar("_Derived")

DecoderState = tuple[torch.Tensor, torch.Tensor]
"""(h, c) of the LSTM cell, each (N, hidden_dim)."""

HIDDEN_BOUND = 1.0
"""|h| <= 1 for an LSTM's hidden state h = sigmoid(o) tanh(c) (and for tanh of the initial
state): int8 products of it quantise on that fixed range (``packed_linear.linear``)."""


@dataclass
class DecoderConfig:
    """Sizes of the decoder. Vocabulary size and region feature size come from the data and
    the encoder, so they are constructor arguments, not settings."""

    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.5
    deep_output: bool = True
    region_dim: int = 0
    """0: attend over the encoder's region features as they are. Above 0: each region first goes
    through a learned linear map to this many features and a ReLU, once per image, and the
    attention, the initial state and the context read those. With a 1,280-d grid and 512 here,
    every word's context products shrink 2.5x (faster training on a CPU; BENCHMARKS.md)."""


@dataclass
class TeacherForcedOutput:
    """Teacher forcing's scores at the positions it computed, packed: ``word_logits[i]`` (V,) are
    the scores of the word at position ``steps[i]`` + 1 of caption ``rows[i]`` given its words up
    to ``steps[i]``, and ``word_alphas[i]`` (R,) the attention weights used to predict it.
    ``logits`` and ``alphas`` lay them out as (B, T, ·), 0 where nothing was computed."""

    word_logits: torch.Tensor
    word_alphas: torch.Tensor
    rows: torch.Tensor
    steps: torch.Tensor
    shape: tuple[int, int]
    """(B, T): captions and positions."""

    @classmethod
    def from_padded(cls, logits: torch.Tensor, alphas: torch.Tensor) -> TeacherForcedOutput:
        """Every position of (B, T, V) ``logits`` and (B, T, R) ``alphas``."""
        images, steps = logits.shape[:2]
        rows = torch.arange(images, device=logits.device).repeat_interleave(steps)
        positions = torch.arange(steps, device=logits.device).repeat(images)
        return cls(logits.flatten(0, 1), alphas.flatten(0, 1), rows, positions, (images, steps))

    def _padded(self, packed: torch.Tensor) -> torch.Tensor:
        return packed.new_zeros(*self.shape, packed.size(1)).index_put((self.rows, self.steps), packed)

    @property
    def logits(self) -> torch.Tensor:
        """(B, T, V)."""
        return self._padded(self.word_logits)

    @property
    def alphas(self) -> torch.Tensor:
        """(B, T, R)."""
        return self._padded(self.word_alphas)


@dataclass
class StepOutput:
    logits: torch.Tensor
    """(N, V) scores for the next word."""
    state: DecoderState
    alpha: torch.Tensor
    """(N, R) attention weights of this step."""


class ShowAttendTellDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, vocab_size: int, feature_dim: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        if config.region_dim < 0:
            raise ValueError(f"decoder.region_dim must be 0 (off) or positive, got {config.region_dim}")
        if config.region_dim and config.region_dim == self._context_terms_width(config):
            # ``step`` tells projected regions that carry the embedded regions from ones that
            # carry context terms by their width.
            raise ValueError(
                f"decoder.region_dim {config.region_dim} equals the context terms' width "
                f"(4 x hidden_dim{' + embed_dim' if config.deep_output else ''}); pick another size"
            )
        region_size = config.region_dim or feature_dim
        self.region_size = region_size
        """The size of the region features the attention and the LSTM read."""
        if config.region_dim:
            self.region_embedding = nn.Linear(feature_dim, config.region_dim)
        self.embedding = nn.Embedding(vocab_size, config.embed_dim)
        self.attention = SoftAttention(region_size, config.hidden_dim, config.attention_dim)
        self.init_h = nn.Linear(region_size, config.hidden_dim)
        self.init_c = nn.Linear(region_size, config.hidden_dim)
        self.gate = nn.Linear(config.hidden_dim, 1)
        self.lstm = nn.LSTMCell(config.embed_dim + region_size, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        if config.deep_output:
            self.hidden_to_embed = nn.Linear(config.hidden_dim, config.embed_dim)
            self.context_to_embed = nn.Linear(region_size, config.embed_dim, bias=False)
            self.output = nn.Linear(config.embed_dim, vocab_size)
        else:
            self.output = nn.Linear(config.hidden_dim, vocab_size)
        self._reset_parameters()
        self._inference_cache: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self.product_precision = "fp32"
        """What the large products of inference on a CPU multiply in: "fp32", or "bf16" / "int8"
        where the CPU has the kernels (``packed_linear``); set by ``CaptioningModel.use_precision``."""

    def _reset_parameters(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)
        # Forget-gate bias 1 keeps early gradients flowing through long captions.
        hidden = self.config.hidden_dim
        with torch.no_grad():
            self.lstm.bias_ih[hidden : 2 * hidden].fill_(1.0)

    @staticmethod
    def _context_terms_width(config: DecoderConfig) -> int:
        return 4 * config.hidden_dim + (config.embed_dim if config.deep_output else 0)

    def embed_regions(self, regions: torch.Tensor) -> torch.Tensor:
        """(N, R, D) encoder regions -> (N, R, region_size): through ``region_embedding`` and a
        ReLU where ``region_dim`` is set, else unchanged. The other methods that take
        ``regions`` call it themselves; it is public for inspection and tests."""
        if not self.config.region_dim:
            return regions
        if torch.is_grad_enabled():
            return torch.relu(self.region_embedding(regions))
        flat = self._layer(self.region_embedding, regions.reshape(-1, regions.size(2)))
        return torch.relu(flat).view(regions.size(0), regions.size(1), -1)

    def init_state(self, regions: torch.Tensor) -> DecoderState:
        """The LSTM's (h, c) for (N, R, D) encoder regions."""
        return self._init_state_from(self.embed_regions(regions))

    def begin(self, regions: torch.Tensor, with_context_terms: bool = False) -> tuple[torch.Tensor, DecoderState]:
        """``project_regions`` and ``init_state`` of the same regions, embedding them once."""
        embedded = self.embed_regions(regions)
        return self._project_embedded(embedded, with_context_terms), self._init_state_from(embedded)

    def _init_state_from(self, embedded: torch.Tensor) -> DecoderState:
        mean_region = embedded.mean(dim=1)
        if torch.is_grad_enabled():
            return torch.tanh(self.init_h(mean_region)), torch.tanh(self.init_c(mean_region))
        sources = [self.init_h.weight, self.init_h.bias, self.init_c.weight, self.init_c.bias]
        weight, bias = self._derived(
            "init_maps", sources, lambda: (torch.cat(sources[::2]), torch.cat(sources[1::2]))
        )
        return torch.tanh(self._product(mean_region, weight, bias)).chunk(2, dim=1)

    def project_regions(
        self, regions: torch.Tensor, with_context_terms: bool = False
    ) -> torch.Tensor:
        """(N, R, D) regions -> (N, R, A) attention keys, once per image.

        With ``with_context_terms`` the result is (N, R, A + 4H [+ E]): the keys followed by
        each region mapped through the LSTM's context input weights (and through L_z with the
        deep output), which ``step`` then uses instead of the regions. Index it like regions.
        Without them, and with ``region_dim`` set, it is (N, R, A + region_dim): the keys
        followed by the embedded regions, which ``step`` then reads instead of ``regions``.
        """
        return self._project_embedded(self.embed_regions(regions), with_context_terms)

    def _project_embedded(self, regions: torch.Tensor, with_context_terms: bool) -> torch.Tensor:
        if not with_context_terms:
            keys = self.attention.project_regions(regions)
            return torch.cat([keys, regions.to(keys.dtype)], dim=2) if self.config.region_dim else keys
        if not torch.is_grad_enabled():
            weight, bias = self._region_maps()
            flat = self._product(regions.reshape(-1, regions.size(2)), weight, bias)
            return flat.view(regions.size(0), regions.size(1), weight.size(0))
        parts = [
            self.attention.project_regions(regions),
            nn.functional.linear(regions, self.lstm.weight_ih[:, self.config.embed_dim :]),
        ]
        if self.config.deep_output:
            parts.append(self.context_to_embed(regions))
        return torch.cat(parts, dim=2)

    def _region_maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The three maps of ``project_regions(..., with_context_terms=True)`` stacked into one
        (A + 4H [+ E], D) weight and its bias, so that they run as one product."""
        attention = self.attention.region_projection
        sources = [attention.weight, attention.bias, self.lstm.weight_ih]
        if self.config.deep_output:
            sources.append(self.context_to_embed.weight)

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            weight = torch.cat([attention.weight, self._context_weight()], dim=0)
            bias = torch.zeros(weight.size(0), dtype=weight.dtype, device=weight.device)
            bias[: attention.bias.numel()] = attention.bias
            return weight, bias

        return self._derived("region_maps", sources, build)

    def _has_context_terms(self, projected_regions: torch.Tensor) -> bool:
        return projected_regions.size(2) == self.config.attention_dim + self._context_terms_width(self.config)

    def _keys_and_regions(
        self, regions: torch.Tensor, projected_regions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, the regions a step weighs) from ``project_regions``'s output without context
        terms: with ``region_dim`` set, both come from it (the embedded regions ride along)."""
        if not self.config.region_dim:
            return projected_regions, regions
        keys, embedded = projected_regions.split([self.config.attention_dim, self.config.region_dim], dim=2)
        return keys, embedded

    def _attend_and_update(
        self,
        embedded: torch.Tensor,
        state: DecoderState,
        regions: torch.Tensor,
        projected_regions: torch.Tensor,
    ) -> tuple[DecoderState, torch.Tensor, torch.Tensor]:
        hidden, cell = state
        context, alpha = self.attention(regions, projected_regions, hidden)
        context = torch.sigmoid(self.gate(hidden)) * context
        hidden, cell = self.lstm(torch.cat([embedded, context], dim=1), (hidden, cell))
        return (hidden, cell), context, alpha

    def _word_logits(
        self, embedded: torch.Tensor, hidden: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        if self.config.deep_output:
            combined = embedded + self.hidden_to_embed(hidden) + self.context_to_embed(context)
            return self.output(self.dropout(combined))
        return self.output(self.dropout(hidden))

    def forward(
        self,
        regions: torch.Tensor,
        captions: torch.Tensor,
        sampling_probability: float = 0.0,
        lengths: torch.Tensor | None = None,
        recording: Recording | None = None,
    ) -> TeacherForcedOutput:
        """Teacher forcing: ``captions`` (B, T+1) start with <start>; predicts positions 1..T.

        ``lengths`` (B,): how many positions of each caption to predict (its words and <end>;
        default all T); positions past a caption's length are not computed (their logits and
        attention weights are 0, and a loss must mask them, as it masks padding). ``regions``
        has a row per caption, or one per image shared by B // images consecutive captions
        (several captions of one image), projected once per image.

        The recurrence runs in ``recurrence.attention_lstm`` (captions in length order, a
        backward through time by hand); the output layer, where most of the arithmetic is, runs
        once over every computed position. Gradients match autograd through ``step`` word by
        word (tests/models/test_recurrence.py).

        ``sampling_probability`` > 0 is scheduled sampling (Bengio et al. 2015): from the second
        word on, each caption's input word is, with that probability, a word sampled from the
        decoder's own previous prediction instead of the reference word, so that training sees
        the model's own mistakes as decoding will. The targets stay the reference words.

        ``recording``: what ``sample_recorded`` computed while it wrote these captions (its
        words after <start>, its lengths), at the current weights; the recurrence then is not
        run again, only its backward.
        """
        if sampling_probability > 0.0:
            return self._forward_scheduled_sampling(regions, captions, sampling_probability)
        images, steps = captions.size(0), captions.size(1) - 1
        device = captions.device
        if lengths is None:
            lengths = torch.full((images,), steps, dtype=torch.long, device=device)
        lengths = lengths.to(device=device, dtype=torch.long).clamp(0, steps)
        order = torch.argsort(lengths, descending=True, stable=True)
        in_order = bool((order == torch.arange(images, device=device)).all())
        packing = PackedSteps.from_sorted_lengths(lengths[order].tolist())
        packed_rows, packed_steps = packing.rows_and_steps(device)
        source_rows = packed_rows if in_order else order[packed_rows]
        embedded = self.embedding(captions[source_rows, packed_steps])
        per_image = rows_per_image(images, regions.size(0))
        image_rows = torch.div(order, per_image, rounding_mode="floor")
        regions = self.embed_regions(regions)
        state = self._init_state_from(regions)
        if per_image > 1 or not in_order:
            state = (state[0][image_rows], state[1][image_rows])
        embed_dim = self.config.embed_dim
        word_gates = nn.functional.linear(
            self.dropout(embedded), self.lstm.weight_ih[:, :embed_dim], self.lstm.bias_ih
        )
        hidden_weight, hidden_bias = self._hidden_weight_and_bias()
        hiddens, contexts, alphas = attention_lstm(
            packing,
            word_gates,
            self.attention.project_regions(regions),
            regions,
            image_rows,
            state,
            self.lstm.weight_ih[:, embed_dim:],
            hidden_weight,
            hidden_bias,
            self.attention.score.weight,
            self.attention.score.bias,
            recorded=None if recording is None else recording.packed(images, order, packing),
        )
        logits = self._word_logits(embedded, hiddens, contexts)
        return TeacherForcedOutput(logits, alphas, source_rows, packed_steps, (images, steps))

    def _hidden_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The previous hidden state's three maps stacked, as ``recurrence`` reads them: the
        attention query, the LSTM's hidden-to-gates and the gate beta."""
        query, gate = self.attention.hidden_projection, self.gate
        return (
            torch.cat([query.weight, self.lstm.weight_hh, gate.weight]),
            torch.cat([query.bias, self.lstm.bias_hh, gate.bias]),
        )

    @torch.no_grad()
    def sample_recorded(
        self,
        regions: torch.Tensor,
        per_image: int,
        max_length: int,
        start_id: int,
        end_id: int,
        draw: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, Recording]:
        """Write ``per_image`` captions for each of the (N, R, D) ``regions`` (an image's
        consecutive), each next word ``draw(logits)`` from the (rows, V) logits, through the
        same recurrence as ``forward``, and keep what every step computed, so that ``forward``
        with the ``recording`` runs only the backward (self-critical training: benchmarks in
        BENCHMARKS.md). Returns (rows, T) words (<end> after a caption's end), their (rows, T)
        mask (1 up to and including <end>) and the recording. Without dropout (eval mode):
        the recorded values must be the ones ``forward`` would compute."""
        if self.training and self.dropout.p > 0:
            raise ValueError("sample_recorded needs the decoder in eval mode: dropout would differ in forward")
        rows = regions.size(0) * per_image
        device = regions.device
        image_rows = torch.arange(rows, device=device) // per_image
        regions = self.embed_regions(regions)
        hidden, cell = (part[image_rows] for part in self._init_state_from(regions))
        embed_dim = self.config.embed_dim
        word_gate_table = nn.functional.linear(self.embedding.weight, self.lstm.weight_ih[:, :embed_dim], self.lstm.bias_ih)
        dtype = compute_dtype(device, self.lstm.weight_ih.dtype)
        hidden_weight, hidden_bias = self._hidden_weight_and_bias()
        keys = self.attention.project_regions(regions)  # under autocast, as ``forward`` computes them
        with torch.autocast(device.type, enabled=False):
            operands = Operands(
                dtype, keys, regions, image_rows, self.lstm.weight_ih[:, embed_dim:],
                hidden_weight, hidden_bias, self.attention.score.weight,
            )
        words = torch.full((rows,), start_id, dtype=torch.long, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        chosen, masks, records = [], [], []
        for _ in range(max_length):
            with torch.autocast(device.type, enabled=False):
                record = operands.step(hidden, cell, word_gate_table[words])
            records.append(record)
            logits = self._word_logits(self.embedding(words), record.hiddens, record.beta * record.raw_contexts)
            words = torch.where(finished, end_id, draw(logits))
            masks.append(~finished)
            chosen.append(words)
            finished = finished | (words == end_id)
            hidden, cell = record.hiddens, record.cells
            if bool(finished.all()):
                break
        return torch.stack(chosen, dim=1), torch.stack(masks, dim=1).float(), Recording.stack(records)

    def _forward_scheduled_sampling(
        self, regions: torch.Tensor, captions: torch.Tensor, probability: float
    ) -> TeacherForcedOutput:
        """``forward`` with the next input depending on this step's output: the word scores
        are computed inside the loop, one step at a time."""
        steps = captions.size(1) - 1
        regions = self.embed_regions(regions)
        projected = self.attention.project_regions(regions)
        state = self._init_state_from(regions)
        words = captions[:, 0]
        logits, alphas = [], []
        for t in range(steps):
            if t > 0:
                use_own = torch.rand(words.shape, device=words.device) < probability
                with torch.no_grad():
                    own = torch.multinomial(torch.softmax(logits[-1].detach().float(), dim=1), 1)
                words = torch.where(use_own, own.squeeze(1), captions[:, t])
            embedded = self.embedding(words)
            state, context, alpha = self._attend_and_update(
                self.dropout(embedded), state, regions, projected
            )
            logits.append(self._word_logits(embedded, state[0], context))
            alphas.append(alpha)
        return TeacherForcedOutput.from_padded(torch.stack(logits, dim=1), torch.stack(alphas, dim=1))

    def step(
        self,
        previous_words: torch.Tensor,
        state: DecoderState,
        regions: torch.Tensor,
        projected_regions: torch.Tensor,
    ) -> StepOutput:
        """One word for N partial captions: (N,) previous word ids -> (N, V) next-word logits.

        ``regions`` and ``projected_regions`` have a row per partial caption, or one per image
        shared by N // B consecutive partial captions (a search's hypotheses of that image).
        """
        embedded = self.embedding(previous_words)
        if self._has_context_terms(projected_regions) or not torch.is_grad_enabled():
            return self._decoding_step(previous_words, embedded, state, regions, projected_regions)
        keys, regions = self._keys_and_regions(regions, projected_regions)
        state, context, alpha = self._attend_and_update(embedded, state, regions, keys)
        return StepOutput(self._word_logits(embedded, state[0], context), state, alpha)

    def _derived(self, name: str, sources: list[torch.Tensor], build: Callable[[], _Derived]) -> _Derived:
        """A value computed from parameters for inference, cached under ``name`` while they are
        unchanged: their storage and version counters are the key, so an optimiser step, a
        loaded state dict or a move to another device rebuilds it."""
        key = tuple((t.data_ptr(), packed_linear.version(t), t.dtype) for t in sources)
        cached = self._inference_cache.get(name)
        if cached is None or cached[0] != key:
            cached = (key, build())
            self._inference_cache[name] = cached
        return cached[1]

    def _word_gate_table(self) -> torch.Tensor:
        """(V, 4H): every word's embedding through the LSTM's input weights, plus their bias.

        A step then looks its words' rows up instead of multiplying by a 4H x E matrix.
        """
        embedding, weight, bias = self.embedding.weight, self.lstm.weight_ih, self.lstm.bias_ih
        return self._derived(
            "word_gates",
            [embedding, weight, bias],
            lambda: nn.functional.linear(embedding, weight[:, : self.config.embed_dim], bias),
        )

    def _hidden_maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The three maps of the previous hidden state in a step (the attention's query, the
        LSTM's hidden-to-gates and the gate beta) stacked into one (A + 4H + 1, H) weight and
        its bias, so that a step reads them in one product."""
        layers = [self.attention.hidden_projection, self.gate]
        sources = [self.lstm.weight_hh, self.lstm.bias_hh] + [p for l in layers for p in (l.weight, l.bias)]

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            query, gate = layers
            weight = torch.cat([query.weight, self.lstm.weight_hh, gate.weight])
            return weight, torch.cat([query.bias, self.lstm.bias_hh, gate.bias])

        return self._derived("hidden_maps", sources, build)

    def _context_weight(self) -> torch.Tensor:
        """The context's two maps (the LSTM's context input weights and L_z) stacked into one
        (4H [+ E], D) weight."""
        weights = [self.lstm.weight_ih[:, self.config.embed_dim :]]
        if self.config.deep_output:
            weights.append(self.context_to_embed.weight)
        return torch.cat(weights, dim=0)

    def _context_maps(self) -> tuple[torch.Tensor, None]:
        """``_context_weight``, cached, for steps that compute the context themselves."""
        sources = [self.lstm.weight_ih]
        if self.config.deep_output:
            sources.append(self.context_to_embed.weight)
        return self._derived("context_maps", sources, lambda: (self._context_weight(), None))

    def _decoding_step(
        self,
        previous_words: torch.Tensor,
        embedded: torch.Tensor,
        state: DecoderState,
        regions: torch.Tensor,
        projected_regions: torch.Tensor,
    ) -> StepOutput:
        """``step`` as searches run it; the same maths as ``_attend_and_update`` and
        ``_word_logits``, arranged for speed: the products of one input are stacked (without
        autograd), the embedding's share of the gates is a table lookup, and the context's two
        maps come from the precomputed context terms when ``projected_regions`` has them. Only
        used with autograd when it has them (tests pin that path to the plain one)."""
        config = self.config
        hidden, cell = state
        context_sizes = [4 * config.hidden_dim] + ([config.embed_dim] if config.deep_output else [])
        with_terms = self._has_context_terms(projected_regions)
        if with_terms:
            keys, context_terms = projected_regions.split(
                [config.attention_dim, projected_regions.size(2) - config.attention_dim], dim=2
            )
        else:
            keys, regions = self._keys_and_regions(regions, projected_regions)
        lstm = self.lstm
        if torch.is_grad_enabled():
            query = self.attention.hidden_projection(hidden)
            hidden_gates = nn.functional.linear(hidden, lstm.weight_hh, lstm.bias_hh)
            gate_logit = self.gate(hidden)
            word_gates = nn.functional.linear(
                embedded, lstm.weight_ih[:, : config.embed_dim], lstm.bias_ih
            )
        else:
            query, hidden_gates, gate_logit = self._product(hidden, *self._hidden_maps(), HIDDEN_BOUND).split(
                [config.attention_dim, 4 * config.hidden_dim, 1], dim=1
            )
            word_gates = self._word_gate_table()[previous_words]
        alpha = self.attention.weights_from_query(keys, query).to(projected_regions.dtype)
        gate = torch.sigmoid(gate_logit)
        if with_terms:
            # Both maps' terms sit side by side: one weighted sum over them, then split.
            context_parts = (gate * weighted_sum(alpha, context_terms)).split(context_sizes, dim=1)
        else:
            context = gate * weighted_sum(alpha.to(regions.dtype), regions)
            context_parts = self._product(context, *self._context_maps()).split(context_sizes, dim=1)
        gates = word_gates + context_parts[0] + hidden_gates
        # nn.LSTMCell's gate order: input, forget, cell candidate, output.
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        if config.deep_output:
            combined = embedded + self._layer(self.hidden_to_embed, hidden, HIDDEN_BOUND) + context_parts[1]
            logits = self._layer(self.output, self.dropout(combined))
        else:
            logits = self._layer(self.output, self.dropout(hidden), HIDDEN_BOUND)
        return StepOutput(logits, (hidden, cell), alpha)

    def _product(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, input_bound: float | None = None
    ) -> torch.Tensor:
        return packed_linear.linear(x, weight, bias, precision=self.product_precision, input_bound=input_bound)

    def _layer(self, layer: nn.Linear, x: torch.Tensor, input_bound: float | None = None) -> torch.Tensor:
        return self._product(x, layer.weight, layer.bias, input_bound)
