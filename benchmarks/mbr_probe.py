"""Would consensus (minimum Bayes risk) reranking raise dev CIDEr-D? Probe on Flickr8k dev.

Usage: .venv/bin/python benchmarks/mbr_probe.py [--checkpoint RUN_DIR] [--samples 10] [--temperature 1.0]

MBR decoding picks, among candidate captions of a photo, the one most similar to the others
(its mean CIDEr-D against them, idf from the training references), instead of the most likely.
Candidates: (a) the beam-3 and beam-5 n-best lists of the model's own search (its settings),
(b) the beam-3 caption plus ``--samples`` captions sampled from the decoder. Also (c) the n-best
ranked by the search's score plus lambda x consensus. Prints dev CIDEr-D / BLEU-4 of each choice
against the plain search's (1,000 dev photos encoded from the JPEGs, decoder alone).

The n-best list comes from the unchanged beam search: the search is deterministic, so it is run
once per rank with ``_best_beams`` (which picks the returned beam) asked for that rank.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from ood_eval import encode_photos  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.data.text import tokenize_caption
from captioner.decoding import beam as beam_module
from captioner.metrics import score_captions
from captioner.metrics.cider_reward import CiderDReward
from captioner.training.evaluation import search_tokens
from captioner.training.self_critical import sample_captions

ROOT = Path(__file__).resolve().parents[1]


def nth_best(rank: int) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    def choose(scores: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
        normalised = scores / beam_module.length_penalty(lengths, alpha)
        return normalised.argsort(dim=1, descending=True)[:, min(rank, scores.size(1) - 1)]
    return choose


def consensus(reward: CiderDReward, candidates: Sequence[Sequence[str]], pool: Sequence[Sequence[str]],
              own: Sequence[int | None]) -> np.ndarray:
    """CIDEr-D of each candidate against the pool, leaving out the candidate's own entry."""
    return np.array([reward.score_against(candidate, [p for i, p in enumerate(pool) if i != own_index])
                     for candidate, own_index in zip(candidates, own)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    train, dev = load_records(args.data, split="train"), load_records(args.data, split="val")
    references = {r.image_id: list(r.captions) for r in dev}
    reward = CiderDReward({r.image_id: [tokenize_caption(c) for c in r.captions] for r in train})
    regions = encode_photos(captioner, [r.image_path for r in dev], desc="encoding dev")

    def words(ids: Sequence[int]) -> list[str]:
        return captioner.vocabulary.decode(list(ids))

    def search(beam_size: int, rank: int) -> list[tuple[list[str], float]]:
        out = []
        with torch.inference_mode(), mock.patch.object(beam_module, "_best_beams", nth_best(rank)):
            for start in range(0, len(dev), 100):
                out += [(words(c.token_ids), c.score) for c in beam_module.beam_search(
                    captioner.model.decoder, regions[start : start + 100], tokens, beam_size=beam_size,
                    max_length=settings.max_length, length_penalty_alpha=settings.length_penalty,
                    no_repeat_ngram_size=settings.no_repeat_ngram_size)]
        return out

    def report(name: str, captions: dict[str, str]) -> None:
        corpus = score_captions(references, captions, meteor=False).corpus
        print(f"{name:48s} CIDEr-D {corpus['CIDEr']:.4f}  BLEU-4 {corpus['BLEU-4']:.4f}")

    for beam_size in (3, 5):
        ranks = [search(beam_size, rank) for rank in range(beam_size)]
        plain, mbr, hybrid = {}, {}, {}
        for index, record in enumerate(dev):
            # A beam that was never filled (score -inf) is no candidate.
            entries = [r[index] for r in ranks if np.isfinite(r[index][1])]
            candidates = [e[0] for e in entries]
            agreement = consensus(reward, candidates, candidates, range(len(candidates)))
            plain[record.image_id] = " ".join(candidates[0])
            mbr[record.image_id] = " ".join(candidates[int(agreement.argmax())])
            scores = np.array([e[1] for e in entries])
            hybrid[record.image_id] = " ".join(candidates[int((scores + 0.5 * agreement).argmax())])
        report(f"beam {beam_size}, the search's choice", plain)
        report(f"beam {beam_size} n-best, MBR", mbr)
        report(f"beam {beam_size} n-best, score + 0.5 x consensus", hybrid)

    best = search(3, 0)
    chosen = {}
    for start in range(0, len(dev), 50):
        with torch.inference_mode():
            sampled = sample_captions(captioner.model.decoder,
                                      regions[start : start + 50].repeat_interleave(args.samples, dim=0),
                                      tokens, settings.max_length, temperature=args.temperature)
        for offset, row in enumerate(range(0, sampled.token_ids.size(0), args.samples)):
            index = start + offset
            pool = []
            for ids in sampled.token_ids[row : row + args.samples].tolist():
                pool.append(words(ids[: ids.index(tokens.end_id)] if tokens.end_id in ids else ids))
            candidates = [best[index][0]] + pool
            agreement = consensus(reward, candidates, pool, [None] + list(range(len(pool))))
            chosen[dev[index].image_id] = " ".join(candidates[int(agreement.argmax())])
    report(f"beam 3 + {args.samples} samples (T={args.temperature}), MBR over samples", chosen)


if __name__ == "__main__":
    main()
