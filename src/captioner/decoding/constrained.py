"""Constrained beam search: the best caption that contains one of a set of words.

Anderson et al. 2017, "Guided Open Vocabulary Image Captioning with Constrained Beam Search",
for one disjunctive constraint ("the caption names one of these tokens"). That constraint has
two states, *unmet* and *met*, and each state keeps its own beam of ``beam_size`` hypotheses:

- an unmet hypothesis followed by an ordinary word stays unmet;
- an unmet hypothesis followed by a constraint word becomes met;
- a met hypothesis stays met whatever follows.

The met beam therefore holds the best captions that name the word, wherever the word falls,
and the unmet beam is an ordinary beam search that never uses it. The result is the best met
caption (after the length penalty), or the best unmet one when no constraint word could be
placed at all; ``decode`` weighs it against the ordinary caption.

Every image of a batch may have its own constraint. The B images x 2 states x K beams are one
(B*2K) batch for the decoder, as in ``beam.py``; images leave the batch when all their live
hypotheses have ended. Knows nothing about where constraints come from (see
``captioner.guidance``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from captioner.decoding.beam import length_penalty, repeated_ngram_mask
from captioner.decoding.endings import ending_lookup
from captioner.decoding.types import Constraint, DecodedCaption, SearchTokens, banned_mask, search_inputs
from captioner.models.decoder import ShowAttendTellDecoder

UNMET, MET = 0, 1


def constraint_masks(
    constraints: Sequence[Constraint], vocab_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, V) bool mask of each image's constraint words, (B, V) additive mask of the words a
    met hypothesis may no longer emit (``Constraint.once_ids``), and (B,) the step from which a
    constraint word may no longer be placed (``Constraint.within``)."""
    words = torch.zeros(len(constraints), vocab_size, dtype=torch.bool, device=device)
    once = torch.zeros(len(constraints), vocab_size, device=device)
    within = torch.full((len(constraints),), torch.iinfo(torch.long).max, device=device)
    for row, constraint in enumerate(constraints):
        words[row, list(constraint.token_ids)] = True
        if constraint.once_ids:
            once[row, list(constraint.once_ids)] = float("-inf")
        if constraint.within is not None:
            within[row] = constraint.within
    return words, once, within


@torch.inference_mode()
def constrained_beam_search(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    constraints: Sequence[Constraint],
    beam_size: int = 3,
    max_length: int = 20,
    length_penalty_alpha: float = 0.0,
    no_repeat_ngram_size: int = 0,
) -> list[DecodedCaption]:
    """Decode (B, R, D) regions so that image b's caption contains one of ``constraints[b]``'s
    tokens (``constraint_met`` says whether it could)."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    if len(constraints) != regions.size(0):
        raise ValueError(f"{regions.size(0)} images but {len(constraints)} constraints")
    for constraint in constraints:
        if not constraint.token_ids:
            raise ValueError("a constraint needs at least one token")
        if set(constraint.token_ids) & (set(tokens.banned_ids) | {tokens.end_id}):
            raise ValueError("a constraint may not use <end> or a banned token")
    batch, region_count, _ = regions.shape
    beams = beam_size
    rows_per_image = 2 * beams  # rows [0, K) unmet, [K, 2K) met
    device = regions.device
    vocab = decoder.vocab_size
    regions, projected, state = search_inputs(decoder, regions, rows_per_image)
    mask = banned_mask(vocab, tokens.banned_ids, device)
    endings = ending_lookup(tokens.endings, vocab, tokens.start_id, tokens.end_id, device)
    only_end = torch.full((vocab,), float("-inf"), device=device)
    only_end[tokens.end_id] = 0.0
    is_constraint, once_mask, within = constraint_masks(constraints, vocab, device)

    scores = torch.full((batch, rows_per_image), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live unmet hypothesis to start from
    words = torch.full((batch * rows_per_image,), tokens.start_id, dtype=torch.long, device=device)
    sequences = torch.empty((batch * rows_per_image, 0), dtype=torch.long, device=device)
    alphas = torch.empty((batch * rows_per_image, 0, region_count), device=device)
    finished = torch.zeros(batch * rows_per_image, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * rows_per_image, dtype=torch.long, device=device)
    met_at = torch.full((batch * rows_per_image,), -1, dtype=torch.long, device=device)
    met_rows = torch.arange(rows_per_image, device=device) >= beams  # (2K,)
    active = torch.arange(batch, device=device)
    results: list[DecodedCaption | None] = [None] * batch

    for step in range(max_length):
        count = active.numel()
        out = decoder.step(words, state, regions, projected)
        log_probs = torch.log_softmax(out.logits.float(), dim=-1) + mask
        if no_repeat_ngram_size > 0:
            log_probs = log_probs + repeated_ngram_mask(sequences, no_repeat_ngram_size, vocab)
        if endings is not None:
            endings.apply_(log_probs, sequences)
        log_probs = log_probs.view(count, rows_per_image, vocab)
        # A met hypothesis may not write ``once_ids`` (e.g. the stand-in a second time).
        log_probs = log_probs + torch.where(met_rows.view(1, -1, 1), once_mask.unsqueeze(1), 0.0)
        log_probs = torch.where(finished.view(count, rows_per_image, 1), only_end, log_probs)
        totals = scores.unsqueeze(2) + log_probs  # (count, 2K, V)
        # (count, 1, V): words that meet the constraint at this step (none after ``within``).
        constraint_words = (is_constraint & (step < within).unsqueeze(1)).unsqueeze(1)
        unmet, met = totals[:, :beams], totals[:, beams:]
        stay_unmet = unmet.masked_fill(constraint_words, float("-inf"))
        become_met = unmet.masked_fill(~constraint_words, float("-inf"))
        # Candidates of the met beam: met hypotheses (any word) first, then unmet ones that
        # write a constraint word; flat index // V says which row they came from.
        unmet_scores, unmet_choice = stay_unmet.reshape(count, beams * vocab).topk(beams, dim=1)
        met_scores, met_choice = torch.cat([met, become_met], dim=1).reshape(
            count, rows_per_image * vocab
        ).topk(beams, dim=1)
        unmet_origin = unmet_choice // vocab
        met_source = met_choice // vocab
        met_origin = torch.where(met_source < beams, met_source + beams, met_source - beams)
        image_offsets = (torch.arange(count, device=device) * rows_per_image).unsqueeze(1)
        origin = (image_offsets + torch.cat([unmet_origin, met_origin], dim=1)).view(-1)
        words = torch.cat([unmet_choice % vocab, met_choice % vocab], dim=1).view(-1)
        scores = torch.cat([unmet_scores, met_scores], dim=1)
        newly_met = torch.cat(
            [torch.zeros_like(met_source, dtype=torch.bool), met_source >= beams], dim=1
        ).view(-1)

        state = (out.state[0][origin], out.state[1][origin])
        was_finished = finished[origin]
        met_at = torch.where(newly_met, step, met_at[origin])
        sequences = torch.cat([sequences[origin], words.unsqueeze(1)], dim=1)
        alphas = torch.cat([alphas[origin], out.alpha.float()[origin].unsqueeze(1)], dim=1)
        lengths = lengths[origin] + (~was_finished & (words != tokens.end_id)).long()
        finished = was_finished | (words == tokens.end_id)

        # A hypothesis with score -inf is an empty slot (e.g. the met beam before any
        # constraint word fits); it must not keep its image in the batch.
        settled = finished.view(count, rows_per_image) | torch.isinf(scores)
        done = settled.all(dim=1)
        if step == max_length - 1:
            done[:] = True
        if not bool(done.any()):
            continue
        for image in done.nonzero(as_tuple=True)[0].tolist():
            row = image * rows_per_image + _choose(
                scores[image], lengths.view(count, rows_per_image)[image], beams,
                length_penalty_alpha,
            )
            length = int(lengths[row])
            log_prob = float(scores[image, row - image * rows_per_image])
            position = int(met_at[row])
            results[int(active[image])] = DecodedCaption(
                token_ids=sequences[row, :length].tolist(),
                log_prob=log_prob,
                score=log_prob / float(length_penalty(lengths[row], length_penalty_alpha)),
                alphas=alphas[row, :length].cpu(),
                finished=bool(finished[row]),
                constraint_met=position >= 0,
                constraint_position=position if position >= 0 else None,
            )
        keep = ~done
        if not bool(keep.any()):
            break
        keep_rows = keep.repeat_interleave(rows_per_image)
        active, scores, words = active[keep], scores[keep], words[keep_rows]
        is_constraint, once_mask, within = is_constraint[keep], once_mask[keep], within[keep]
        state = (state[0][keep_rows], state[1][keep_rows])
        regions, projected = regions[keep], projected[keep]
        sequences, alphas = sequences[keep_rows], alphas[keep_rows]
        finished, lengths, met_at = finished[keep_rows], lengths[keep_rows], met_at[keep_rows]
    return results  # type: ignore[return-value]


def _choose(scores: torch.Tensor, lengths: torch.Tensor, beams: int, alpha: float) -> int:
    """Row (of 2K) of the caption to return: the best met one after the length penalty, or the
    best unmet one when the met beam is empty."""
    normalised = scores / length_penalty(lengths, alpha)
    best_met = beams + int(normalised[beams:].argmax())
    if math.isinf(float(normalised[best_met])):
        return int(normalised[:beams].argmax())
    return best_met
