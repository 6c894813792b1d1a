"""Would ``torch.compile`` make one photo's decoding step faster on the CPU? A probe.

Usage: .venv/bin/python benchmarks/compile_step_probe.py [--checkpoint RUN_DIR] [--rounds 3] [--threads 1]

Times one step of the shipped decoder for one photo's 3 beams (the step a beam search repeats
once per word) three ways, in alternating rounds, medians of 200 calls each:

- the decoder as searches run it (``decoder.step``: oneDNN-packed stacked weights, context terms),
- the same maths written as one plain module (``nn.functional.linear`` on ordinary weights),
- that module through ``torch.compile`` (inductor, with ``freezing`` so that it packs the
  weights into oneDNN's layout itself and fuses the elementwise work into C++ kernels).

Also prints how many bytes of weights one step reads, which bounds it from below on a CPU that
waits on memory. First prints each variant's largest logit difference from the one before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from caption_latency import latency_regions  # noqa: E402
from packed_linear import median_us  # noqa: E402

from captioner.api import Captioner
from captioner.models.decoder import ShowAttendTellDecoder


class PlainStep(nn.Module):
    """``ShowAttendTellDecoder._decoding_step`` with context terms and a deep output, for N
    hypotheses of one image, as one module of plain operators (weights copied from ``decoder``)."""

    def __init__(self, decoder: ShowAttendTellDecoder) -> None:
        super().__init__()
        config = decoder.config
        self.sizes = [config.attention_dim, 4 * config.hidden_dim, 1]
        with torch.no_grad():
            hidden_weight, hidden_bias = decoder._hidden_maps()
            self.hidden_maps = nn.Linear(config.hidden_dim, hidden_weight.size(0))
            self.hidden_maps.weight.copy_(hidden_weight)
            self.hidden_maps.bias.copy_(hidden_bias)
            self.word_gates = nn.Parameter(decoder._word_gate_table().clone())
            self.embedding = nn.Parameter(decoder.embedding.weight.clone())
            self.hidden_to_embed = nn.Linear(config.hidden_dim, config.embed_dim)
            self.hidden_to_embed.load_state_dict(decoder.hidden_to_embed.state_dict())
            self.output = nn.Linear(config.embed_dim, decoder.vocab_size)
            self.output.load_state_dict(decoder.output.state_dict())
            self.score = nn.Linear(config.attention_dim, 1)
            self.score.load_state_dict(decoder.attention.score.state_dict())

    def forward(self, words: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor, keys: torch.Tensor,
                context_gates: torch.Tensor, context_embed: torch.Tensor) -> tuple[torch.Tensor, ...]:
        query, hidden_gates, gate_logit = self.hidden_maps(hidden).split(self.sizes, dim=1)
        alpha = torch.softmax(self.score(torch.tanh(keys + query.unsqueeze(1))).squeeze(2), dim=1)
        gate = torch.sigmoid(gate_logit)
        gates = self.word_gates[words] + gate * (alpha @ context_gates) + hidden_gates
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        combined = self.embedding[words] + self.hidden_to_embed(hidden) + gate * (alpha @ context_embed)
        return self.output(combined), hidden, cell, alpha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    decoder = captioner.model.decoder
    config = decoder.config
    beams = 3
    regions = latency_regions(captioner)
    with torch.no_grad():
        projected = decoder.project_regions(regions, with_context_terms=True)
        hidden, cell = (part.repeat(beams, 1) for part in decoder.init_state(regions))
        words = torch.tensor([5, 6, 7])
        keys, context_gates, context_embed = (
            part.contiguous()
            for part in projected[0].split([config.attention_dim, 4 * config.hidden_dim, config.embed_dim], dim=1)
        )
        plain = PlainStep(decoder).eval()
        inputs = (words, hidden, cell, keys, context_gates, context_embed)
        reference = decoder.step(words, (hidden, cell), regions, projected)
        plain_logits = plain(*inputs)[0]
        print(f"plain module vs decoder.step: max |logit difference| "
              f"{(plain_logits - reference.logits).abs().max().item():.2e}")
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        started = time.perf_counter()
        compiled = torch.compile(plain, dynamic=False)
        compiled_logits = compiled(*inputs)[0]
        print(f"torch.compile (inductor, freezing): first call {time.perf_counter() - started:.1f} s, "
              f"max |logit difference| {(compiled_logits - plain_logits).abs().max().item():.2e}")
        read = sum(t.numel() * t.element_size() for t in (
            plain.hidden_maps.weight, plain.hidden_to_embed.weight, plain.output.weight))
        print(f"weights a step multiplies: {read / 2**20:.1f} MiB of float32 "
              f"(plus {beams} rows of the {plain.word_gates.size(0)} x {plain.word_gates.size(1)} word-gate table)")
        for round_number in range(1, args.rounds + 1):
            timings = {
                "decoder.step (packed)": median_us(lambda: decoder.step(words, (hidden, cell), regions, projected), 200),
                "plain module, eager": median_us(lambda: plain(*inputs), 200),
                "plain module, compiled": median_us(lambda: compiled(*inputs), 200),
            }
            print(f"round {round_number}: " + ", ".join(f"{name} {us / 1000:.2f} ms" for name, us in timings.items()))


if __name__ == "__main__":
    main()
