"""The decoder's recurrence over whole captions for training, with a hand-written backward.

Teacher forcing (and scoring sampled captions in self-critical training) runs the attention LSTM
over known words. Written with autograd, every step is a dozen small operations and its backward
a dozen more, each weight's gradient is one small product per step, and captions shorter than
the longest of their batch are computed to its length and then masked. On a CPU that is most of
a training step (BENCHMARKS.md, "Training on the CPU: the packed recurrence").

``attention_lstm`` runs the same maths as ``ShowAttendTellDecoder._attend_and_update`` step by
step, with three differences in how, none in what:

- rows are sorted by caption length and a step computes only the captions still being written,
  so the results come out *packed*, time-major (step 0's rows, then step 1's, ...), the layout
  of ``torch.nn.utils.rnn.pack_padded_sequence``;
- its backward runs through time by hand, keeping each step's gradients, so that every weight's
  gradient is one large product over all steps at the end instead of one small one per step;
- with autocast on, the matrix products run in its dtype (bfloat16 on CPUs, as autocast would)
  and the elementwise LSTM maths in float32.

The attention energies w^T tanh(k + q) are computed as 2 w^T sigmoid(2 (k + q)) in float32, a
few rows at a time so that their temporaries stay in cache, and recomputed in the backward
rather than kept. Tests pin outputs and gradients to autograd's step-by-step version in float64.

Self-critical training samples its captions with ``Operands.step`` too, keeping every step's
values (``Recording``); teacher forcing over the sampled words then takes those values instead
of running the steps again, and only its backward runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioner.models.attention import ENERGY_GROUP_VALUES


@dataclass(frozen=True)
class PackedSteps:
    """Where each step's rows sit in the packed outputs: step t holds ``active[t]`` rows, the
    captions (in length order) still being written, at ``offsets[t]``."""

    active: tuple[int, ...]
    offsets: tuple[int, ...]

    @classmethod
    def from_sorted_lengths(cls, lengths: list[int]) -> PackedSteps:
        """``lengths`` in descending order: how many steps each caption takes."""
        steps = lengths[0] if lengths else 0
        active, offsets, total = [], [], 0
        count = len(lengths)
        for step in range(steps):
            while count and lengths[count - 1] <= step:
                count -= 1
            active.append(count)
            offsets.append(total)
            total += count
        return cls(tuple(active), tuple(offsets))

    @property
    def total(self) -> int:
        return (self.offsets[-1] + self.active[-1]) if self.active else 0

    def rows_and_steps(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted row, step) of every packed position, each (total,)."""
        if not self.active:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty
        rows = torch.cat([torch.arange(n, device=device) for n in self.active])
        steps = torch.repeat_interleave(
            torch.arange(len(self.active), device=device), torch.tensor(self.active, device=device)
        )
        return rows, steps


def compute_dtype(device: torch.device, parameter_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the recurrence's matrix products: autocast's where it is on, else the
    parameters'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return parameter_dtype


def _elementwise_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def energy_group_rows(region_count: int, attention_size: int) -> int:
    """How many rows' attention energies to compute at a time: ``ENERGY_GROUP_VALUES`` (row,
    region, attention unit) values, which stay in cache between the operations on them, as
    decoding groups them."""
    return max(1, ENERGY_GROUP_VALUES // max(1, region_count * attention_size))


def _groups(rows: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(rows, first + size)) for first in range(0, rows, size)]


def _energy_sigmoids(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """sigmoid(2 (k + q)) for (n, R, A) keys and (n, A) queries: w^T tanh(k + q) is
    2 w^T sigmoid(2 (k + q)) - sum(w), and sigmoid is several times faster than tanh on a CPU;
    the constant, like the score's bias, cancels in the softmax over regions."""
    return torch.add(keys, query.unsqueeze(1)).mul_(2.0).sigmoid_()


@dataclass
class Recording:
    """What a run of the recurrence computed, one row per (caption, step) position, in the order
    of its buffers: packed (``PackedSteps``) inside the recurrence, or every row at every step
    (``step_major``) where sampling recorded it before the captions' lengths were known."""

    hiddens: torch.Tensor
    cells: torch.Tensor
    activations: torch.Tensor
    """The LSTM's activated gates: input, forget, candidate, output."""
    alphas: torch.Tensor
    raw_contexts: torch.Tensor
    """sum_i alpha_i a_i, before the gate beta."""
    beta: torch.Tensor
    queries: torch.Tensor
    """The attention's query W_h h_(t-1) + b."""

    def fields(self) -> tuple[torch.Tensor, ...]:
        return (self.hiddens, self.cells, self.activations, self.alphas, self.raw_contexts, self.beta, self.queries)

    @classmethod
    def stack(cls, steps: list[Recording]) -> Recording:
        return cls(*(torch.cat(parts) for parts in zip(*(step.fields() for step in steps))))

    def packed(self, rows: int, order: torch.Tensor, steps: PackedSteps) -> Recording:
        """Every row at every step (step-major, ``rows`` per step) -> the packed layout of the
        rows in ``order`` (descending length)."""
        index = torch.cat([t * rows + order[:n] for t, n in enumerate(steps.active)]) if steps.active else order[:0]
        return Recording(*(field[index] for field in self.fields()))


class Operands:
    """What every step of the recurrence reads, in the dtypes it computes in, and the step."""

    def __init__(
        self,
        dtype: torch.dtype,
        keys: torch.Tensor,
        regions: torch.Tensor,
        image_rows: torch.Tensor,
        context_weight: torch.Tensor,
        hidden_weight: torch.Tensor,
        hidden_bias: torch.Tensor,
        score_weight: torch.Tensor,
    ) -> None:
        self.dtype, self.acc = dtype, _elementwise_dtype(dtype)
        self.hidden_size = hidden_weight.size(1)
        self.attention_size = keys.size(2)
        self.regions = regions.to(dtype)[image_rows]
        self.keys = keys[image_rows]  # in its own dtype: adding the float32 query promotes
        self.context_weight = context_weight.to(dtype)
        self.hidden_weight = hidden_weight.to(dtype)
        self.hidden_bias = hidden_bias.to(dtype)
        self.score_vector = score_weight.reshape(-1).to(self.acc)
        self.group = energy_group_rows(keys.size(1), self.attention_size)

    def step(self, hidden: torch.Tensor, cell: torch.Tensor, word_gates: torch.Tensor) -> Recording:
        """One step for the first ``hidden.size(0)`` rows: the same maths as the decoder's
        ``_attend_and_update``, products in ``dtype``, the rest in float32 (float64 if the
        products are)."""
        n, dtype, acc = hidden.size(0), self.dtype, self.acc
        maps = torch.addmm(self.hidden_bias, hidden.to(dtype), self.hidden_weight.t()).to(acc)
        query, hidden_gates, gate_logit = maps.split([self.attention_size, 4 * self.hidden_size, 1], dim=1)
        energy = torch.cat([
            torch.matmul(_energy_sigmoids(self.keys[first:last], query[first:last]), 2.0 * self.score_vector)
            for first, last in _groups(n, self.group)
        ])
        alpha = torch.softmax(energy, dim=1)
        raw = torch.bmm(alpha.to(dtype).unsqueeze(1), self.regions[:n]).squeeze(1).to(acc)
        gate = torch.sigmoid(gate_logit)
        gates = word_gates.to(acc) + hidden_gates
        gates += torch.mm((gate * raw).to(dtype), self.context_weight.t()).to(acc)
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
        input_gate, forget_gate, output_gate = input_gate.sigmoid(), forget_gate.sigmoid(), output_gate.sigmoid()
        candidate = candidate.tanh()
        cell = forget_gate * cell.to(acc) + input_gate * candidate
        hidden = output_gate * cell.tanh()
        activations = torch.cat([input_gate, forget_gate, candidate, output_gate], dim=1)
        return Recording(hidden, cell, activations, alpha, raw, gate, query)


class _AttentionLSTM(torch.autograd.Function):
    """See ``attention_lstm``. Inputs after ``recorded`` are tensors; their gradients are
    returned in the same order."""

    @staticmethod
    def forward(  # noqa: PLR0913 - one argument per tensor the recurrence reads
        ctx,
        steps: PackedSteps,
        products_dtype: torch.dtype,
        recorded: Recording | None,
        word_gates: torch.Tensor,
        keys: torch.Tensor,
        regions: torch.Tensor,
        image_rows: torch.Tensor,
        hidden0: torch.Tensor,
        cell0: torch.Tensor,
        context_weight: torch.Tensor,
        hidden_weight: torch.Tensor,
        hidden_bias: torch.Tensor,
        score_weight: torch.Tensor,
        score_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if recorded is None:
            operands = Operands(products_dtype, keys, regions, image_rows, context_weight, hidden_weight,
                                hidden_bias, score_weight)
            records = []
            hidden, cell = hidden0.to(operands.acc), cell0.to(operands.acc)
            for n, start in zip(steps.active, steps.offsets):
                record = operands.step(hidden[:n], cell[:n], word_gates[start : start + n])
                records.append(record)
                hidden, cell = record.hiddens, record.cells
            recorded = Recording.stack(records) if records else Recording(
                *(torch.zeros(0, size, dtype=operands.acc, device=keys.device) for size in (
                    cell0.size(1), cell0.size(1), 4 * cell0.size(1), keys.size(1), regions.size(2), 1, keys.size(2)))
            )
        hiddens, contexts, alphas = recorded.hiddens, recorded.beta * recorded.raw_contexts, recorded.alphas
        ctx.steps, ctx.dtype = steps, products_dtype
        ctx.regions_need_grad = regions.requires_grad
        ctx.save_for_backward(
            word_gates, keys, regions, image_rows, hidden0, cell0, context_weight, hidden_weight, hidden_bias,
            score_weight, score_bias, *recorded.fields(),
        )
        return hiddens, contexts, alphas

    @staticmethod
    def backward(ctx, grad_hiddens, grad_contexts, grad_alphas):  # noqa: PLR0915 - one pass through time
        (
            word_gates, keys, regions, image_rows, hidden0, cell0, context_weight, hidden_weight, hidden_bias,
            score_weight, score_bias, hiddens, cells, activations, alphas, raw_contexts, beta, queries,
        ) = ctx.saved_tensors
        steps, dtype = ctx.steps, ctx.dtype
        acc = _elementwise_dtype(dtype)
        total, hidden_size = steps.total, cell0.size(1)
        attention_size = keys.size(2)
        device = keys.device
        operands = Operands(dtype, keys, regions, image_rows, context_weight, hidden_weight, hidden_bias, score_weight)
        regions_c, row_keys, score_vector, group = operands.regions, operands.keys, operands.score_vector, operands.group
        context_weight_c, hidden_weight_c = operands.context_weight, operands.hidden_weight

        def zeros_or(grad: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.zeros(shape, dtype=acc, device=device) if grad is None else grad.to(acc)

        grad_hiddens = zeros_or(grad_hiddens, (total, hidden_size))
        grad_contexts = zeros_or(grad_contexts, (total, regions.size(2)))
        grad_alphas = zeros_or(grad_alphas, (total, keys.size(1)))

        grad_gates = torch.empty(total, 4 * hidden_size, dtype=acc, device=device)
        grad_maps = torch.empty(total, attention_size + 4 * hidden_size + 1, dtype=acc, device=device)
        grad_keys = torch.zeros(keys.shape, dtype=acc, device=device)  # per image
        grad_score = torch.zeros(attention_size, dtype=acc, device=device)
        grad_energy_total = torch.zeros((), dtype=acc, device=device)  # 0 but for rounding
        # The regions' gradient, sum_t alpha_t^T grad_raw_t per caption, is one batched product
        # after the loop, from every step's grad_raw kept here.
        grad_raws = torch.empty(total, regions.size(2), dtype=acc, device=device) if ctx.regions_need_grad else None
        previous_hiddens = torch.empty(total, hidden_size, dtype=acc, device=device)

        grad_hidden = grad_cell = None
        for t in range(len(steps.active) - 1, -1, -1):
            n, start = steps.active[t], steps.offsets[t]
            rows = slice(start, start + n)
            if t > 0:
                before = slice(steps.offsets[t - 1], steps.offsets[t - 1] + n)
                hidden_before, cell_before = hiddens[before], cells[before]
            else:
                hidden_before, cell_before = hidden0[:n].to(acc), cell0[:n].to(acc)
            previous_hiddens[rows] = hidden_before

            grad_h = grad_hiddens[rows].clone()
            grad_c = torch.zeros(n, hidden_size, dtype=acc, device=device)
            if grad_hidden is not None:
                grad_h[: grad_hidden.size(0)] += grad_hidden
                grad_c[: grad_cell.size(0)] += grad_cell
            input_gate, forget_gate, candidate, output_gate = activations[rows].chunk(4, dim=1)
            cell_tanh = cells[rows].tanh()
            grad_c += grad_h * output_gate * (1 - cell_tanh * cell_tanh)
            gates_grad = grad_gates[rows]
            gi, gf, gg, go = gates_grad.chunk(4, dim=1)
            torch.mul(grad_c * candidate, input_gate * (1 - input_gate), out=gi)
            torch.mul(grad_c * cell_before, forget_gate * (1 - forget_gate), out=gf)
            torch.mul(grad_c * input_gate, 1 - candidate * candidate, out=gg)
            torch.mul(grad_h * cell_tanh, output_gate * (1 - output_gate), out=go)
            grad_cell = grad_c * forget_gate

            grad_context = grad_contexts[rows] + torch.mm(gates_grad.to(dtype), context_weight_c).to(acc)
            raw, gate = raw_contexts[rows], beta[rows]
            grad_gate_logit = (grad_context * raw).sum(dim=1, keepdim=True) * gate * (1 - gate)
            grad_raw = grad_context * gate
            alpha = alphas[rows]
            grad_alpha = torch.bmm(grad_raw.to(dtype).unsqueeze(1), regions_c[:n].transpose(1, 2)).squeeze(1).to(acc)
            grad_alpha += grad_alphas[rows]
            if grad_raws is not None:
                grad_raws[rows] = grad_raw
            grad_energy = alpha * (grad_alpha - (alpha * grad_alpha).sum(dim=1, keepdim=True))
            grad_energy_total += grad_energy.sum()
            maps_grad = grad_maps[rows]
            query = queries[rows]
            for first, last in _groups(n, group):
                # The sigmoids again, a group of rows at a time, while they are in cache: cheaper
                # than keeping every step's (rows, R, A) of them. With tanh = 2 sigmoid - 1, w's
                # gradient is sum(g (2 sigmoid - 1)) and d tanh / dx = 4 sigmoid (1 - sigmoid);
                # the factor 4 w is applied once, after the loop.
                sigmoid = _energy_sigmoids(row_keys[first:last], query[first:last])
                grad = grad_energy[first:last].unsqueeze(1)
                grad_score += torch.bmm(grad, sigmoid).sum(dim=(0, 1))
                grad_pre = (1.0 - sigmoid).mul_(sigmoid).mul_(grad.transpose(1, 2))
                grad_keys.index_add_(0, image_rows[first:last], grad_pre)
                maps_grad[first:last, :attention_size] = grad_pre.sum(dim=1)
            maps_grad[:, :attention_size] *= 4.0 * score_vector
            maps_grad[:, attention_size : attention_size + 4 * hidden_size] = gates_grad
            maps_grad[:, -1:] = grad_gate_logit
            grad_hidden = torch.mm(maps_grad.to(dtype), hidden_weight_c).to(acc)

        # Each weight's gradient in one product over every step.
        contexts = (beta * raw_contexts).to(dtype)
        grad_context_weight = torch.mm(grad_gates.to(dtype).t(), contexts).to(context_weight.dtype)
        grad_hidden_weight = torch.mm(grad_maps.to(dtype).t(), previous_hiddens.to(dtype)).to(hidden_weight.dtype)
        grad_hidden_bias = grad_maps.sum(dim=0).to(hidden_bias.dtype)

        grad_hidden0 = torch.zeros(hidden0.shape, dtype=hidden0.dtype, device=device)
        grad_cell0 = torch.zeros(cell0.shape, dtype=cell0.dtype, device=device)
        if grad_hidden is not None:
            grad_hidden0[: grad_hidden.size(0)] = grad_hidden
            grad_cell0[: grad_cell.size(0)] = grad_cell
        grad_keys *= 4.0 * score_vector
        grad_regions = None
        if grad_raws is not None:
            grad_regions = torch.zeros(regions.shape, dtype=acc, device=device)
            if total:
                captions, length = steps.active[0], len(steps.active)
                caption_rows, step_index = steps.rows_and_steps(device)
                padded_alphas = alphas.new_zeros(captions, length, alphas.size(1), dtype=acc)
                padded_alphas[caption_rows, step_index] = alphas.to(acc)
                padded_raws = grad_raws.new_zeros(captions, length, grad_raws.size(1))
                padded_raws[caption_rows, step_index] = grad_raws
                per_caption = torch.bmm(padded_alphas.transpose(1, 2).to(dtype), padded_raws.to(dtype)).to(acc)
                grad_regions.index_add_(0, image_rows[:captions], per_caption)
        grad_score = 2.0 * grad_score - grad_energy_total
        return (
            None,
            None,
            None,
            grad_gates.to(word_gates.dtype),
            grad_keys.to(keys.dtype),
            grad_regions.to(regions.dtype) if grad_regions is not None else None,
            None,
            grad_hidden0,
            grad_cell0,
            grad_context_weight,
            grad_hidden_weight,
            grad_hidden_bias,
            grad_score.view_as(score_weight).to(score_weight.dtype),
            torch.zeros_like(score_bias),
        )


def attention_lstm(
    steps: PackedSteps,
    word_gates: torch.Tensor,
    keys: torch.Tensor,
    regions: torch.Tensor,
    image_rows: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    context_weight: torch.Tensor,
    hidden_weight: torch.Tensor,
    hidden_bias: torch.Tensor,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor,
    recorded: Recording | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the attention LSTM over known words; rows in descending order of length.

    ``word_gates`` (total, 4H): each packed position's word embedding through the LSTM's input
    weights, plus their bias; ``keys`` (I, R, A) and ``regions`` (I, R, D) per image, and
    ``image_rows`` (B,) the image of each row (several rows may share one); ``state`` the initial
    (h, c), each (B, H). ``hidden_weight`` / ``hidden_bias`` stack the three maps of the
    previous hidden state, (A + 4H + 1, H): the attention query, the LSTM's hidden-to-gates and
    the gate beta. Returns packed (total, H) hidden states, (total, D) gated contexts and (total,
    R) attention weights.

    ``recorded``: the packed ``Recording`` of a run over these words that already happened (a
    sampling run, ``ShowAttendTellDecoder.sample_recorded``) at these weights: its values are
    used instead of computing the steps again, and only the backward runs.
    """
    dtype = compute_dtype(keys.device, context_weight.dtype)
    with torch.autocast(keys.device.type, enabled=False):
        return _AttentionLSTM.apply(
            steps, dtype, recorded, word_gates, keys, regions, image_rows, *state, context_weight, hidden_weight,
            hidden_bias, score_weight, score_bias,
        )
