"""The Show, Attend and Tell decoder: an LSTM that writes one word at a time with soft attention.

Xu et al. 2015, "Show, Attend and Tell": the initial LSTM state comes from the mean region
feature; at every step additive attention over the regions gives a context vector, scaled by a
learned gate beta; the LSTM reads the previous word's embedding and that context; the word
distribution is the "deep output" L_o(E y_{t-1} + L_h h_t + L_z z_t).

Two ways in: ``forward`` (teacher forcing over whole captions, for training) and ``step``
(one word for a batch of partial captions, for the search strategies in ``decoding``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from captioner.models.attention import SoftAttention

DecoderState = tuple[torch.Tensor, torch.Tensor]
"""(h, c) of the LSTM cell, each (N, hidden_dim)."""


@dataclass
class DecoderConfig:
    """Sizes of the decoder. Vocabulary size and region feature size come from the data and
    the encoder, so they are constructor arguments, not settings."""

    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.5
    deep_output: bool = True


@dataclass
class TeacherForcedOutput:
    logits: torch.Tensor
    """(B, T, V): scores of the word at position t+1 given words 0..t."""
    alphas: torch.Tensor
    """(B, T, R): the attention weights used to predict each of those words."""


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
        self.embedding = nn.Embedding(vocab_size, config.embed_dim)
        self.attention = SoftAttention(feature_dim, config.hidden_dim, config.attention_dim)
        self.init_h = nn.Linear(feature_dim, config.hidden_dim)
        self.init_c = nn.Linear(feature_dim, config.hidden_dim)
        self.gate = nn.Linear(config.hidden_dim, 1)
        self.lstm = nn.LSTMCell(config.embed_dim + feature_dim, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        if config.deep_output:
            self.hidden_to_embed = nn.Linear(config.hidden_dim, config.embed_dim)
            self.context_to_embed = nn.Linear(feature_dim, config.embed_dim, bias=False)
            self.output = nn.Linear(config.embed_dim, vocab_size)
        else:
            self.output = nn.Linear(config.hidden_dim, vocab_size)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)
        # Forget-gate bias 1 keeps early gradients flowing through long captions.
        hidden = self.config.hidden_dim
        with torch.no_grad():
            self.lstm.bias_ih[hidden : 2 * hidden].fill_(1.0)

    def init_state(self, regions: torch.Tensor) -> DecoderState:
        mean_region = regions.mean(dim=1)
        return torch.tanh(self.init_h(mean_region)), torch.tanh(self.init_c(mean_region))

    def project_regions(self, regions: torch.Tensor) -> torch.Tensor:
        return self.attention.project_regions(regions)

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

    def forward(self, regions: torch.Tensor, captions: torch.Tensor) -> TeacherForcedOutput:
        """Teacher forcing: ``captions`` (B, T+1) start with <start>; predicts positions 1..T.

        The LSTM runs step by step, but the output layer (the large vocabulary projection)
        runs once over all steps, which is where most of the arithmetic is.
        """
        steps = captions.size(1) - 1
        embedded = self.embedding(captions[:, :steps])
        projected = self.project_regions(regions)
        state = self.init_state(regions)
        hiddens, contexts, alphas = [], [], []
        for t in range(steps):
            state, context, alpha = self._attend_and_update(
                self.dropout(embedded[:, t]), state, regions, projected
            )
            hiddens.append(state[0])
            contexts.append(context)
            alphas.append(alpha)
        logits = self._word_logits(
            embedded, torch.stack(hiddens, dim=1), torch.stack(contexts, dim=1)
        )
        return TeacherForcedOutput(logits=logits, alphas=torch.stack(alphas, dim=1))

    def step(
        self,
        previous_words: torch.Tensor,
        state: DecoderState,
        regions: torch.Tensor,
        projected_regions: torch.Tensor,
    ) -> StepOutput:
        """One word for N partial captions: (N,) previous word ids -> (N, V) next-word logits."""
        embedded = self.embedding(previous_words)
        state, context, alpha = self._attend_and_update(
            embedded, state, regions, projected_regions
        )
        return StepOutput(self._word_logits(embedded, state[0], context), state, alpha)
