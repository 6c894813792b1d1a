"""Batched beam search: every image and every beam of a batch advance in one tensor program.

The B images x K beams are one (B*K) batch for the decoder; each step scores all K*V
continuations of an image's beams, keeps the best K, and reorders the LSTM state, the words and
the attention maps by their back-pointers. A finished beam (it emitted <end>) stays in the beam
with its score frozen, so it competes with the open ones until the end. A caption that never
emits <end> within ``max_length`` words is returned as its best partial caption, not dropped.
"""

from __future__ import annotations

import torch

from captioner.decoding.endings import ending_lookup
from captioner.decoding.types import DecodedCaption, SearchTokens, banned_mask, search_inputs
from captioner.models.decoder import ShowAttendTellDecoder


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + |Y|) / 6) ** alpha; alpha 0 ranks by plain log-probability."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def repeated_ngram_mask(
    sequences: torch.Tensor, ngram_size: int, vocab_size: int
) -> torch.Tensor:
    """(N, V) additive mask banning any word that would repeat an n-gram already in the sequence.

    ``sequences`` (N, T) holds the words so far. For each earlier position where the last
    n-1 words occurred, the word that followed them then is banned now.
    """
    count, length = sequences.shape
    mask = torch.zeros(count, vocab_size, device=sequences.device)
    prefix = ngram_size - 1
    if ngram_size <= 0 or length < ngram_size:
        return mask
    if prefix == 0:
        return mask.scatter_(1, sequences, float("-inf"))
    windows = sequences.unfold(1, prefix, 1)[:, : length - prefix]  # (N, T-n+1, n-1)
    matches = (windows == sequences[:, -prefix:].unsqueeze(1)).all(dim=2)
    followers = sequences[:, prefix:]  # the word after each window
    rows, columns = matches.nonzero(as_tuple=True)
    mask[rows, followers[rows, columns]] = float("-inf")
    return mask


@torch.inference_mode()
def beam_search(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    beam_size: int = 3,
    max_length: int = 20,
    length_penalty_alpha: float = 0.0,
    no_repeat_ngram_size: int = 0,
) -> list[DecodedCaption]:
    """Decode (B, R, D) region features into the best of ``beam_size`` beams per image."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    batch, region_count, _ = regions.shape
    beams = beam_size
    device = regions.device
    vocab = decoder.vocab_size
    regions, projected, state = search_inputs(decoder, regions, beams)
    mask = banned_mask(vocab, tokens.banned_ids, device)
    endings = ending_lookup(tokens.endings, vocab, tokens.start_id, tokens.end_id, device)
    only_end = torch.full((vocab,), float("-inf"), device=device)
    only_end[tokens.end_id] = 0.0

    # All beams of an image start identical: keep only the first alive at step 0.
    scores = torch.full((batch, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    words = torch.full((batch * beams,), tokens.start_id, dtype=torch.long, device=device)
    sequences = torch.empty((batch * beams, 0), dtype=torch.long, device=device)
    alphas = torch.empty((batch * beams, 0, region_count), device=device)
    finished = torch.zeros(batch * beams, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * beams, dtype=torch.long, device=device)
    # Images leave the batch as soon as all their beams have ended, so that long captions of a
    # few images do not keep the decoder running over the whole batch.
    active = torch.arange(batch, device=device)
    results: list[DecodedCaption | None] = [None] * batch

    for step in range(max_length):
        count = active.numel()
        image_offsets = (torch.arange(count, device=device) * beams).unsqueeze(1)
        out = decoder.step(words, state, regions, projected)
        step_log_probs = torch.log_softmax(out.logits.float(), dim=-1) + mask
        if no_repeat_ngram_size > 0:
            step_log_probs = step_log_probs + repeated_ngram_mask(
                sequences, no_repeat_ngram_size, vocab
            )
        if endings is not None:
            endings.apply_(step_log_probs, sequences)
        step_log_probs = torch.where(finished.unsqueeze(1), only_end, step_log_probs)
        candidates = (scores.view(-1, 1) + step_log_probs).view(count, beams * vocab)
        scores, flat_choice = candidates.topk(beams, dim=1)
        origin = (image_offsets + flat_choice // vocab).view(-1)
        words = (flat_choice % vocab).view(-1)

        state = (out.state[0][origin], out.state[1][origin])
        was_finished = finished[origin]
        sequences = torch.cat([sequences[origin], words.unsqueeze(1)], dim=1)
        alphas = torch.cat([alphas[origin], out.alpha.float()[origin].unsqueeze(1)], dim=1)
        lengths = lengths[origin] + (~was_finished & (words != tokens.end_id)).long()
        finished = was_finished | (words == tokens.end_id)

        done = finished.view(count, beams).all(dim=1)
        if step == max_length - 1:
            done[:] = True
        if not bool(done.any()):
            continue
        best_of_done = _best_beams(
            scores[done], lengths.view(count, beams)[done], length_penalty_alpha
        )
        done_rows = done.nonzero(as_tuple=True)[0]
        for image, beam in zip(done_rows.tolist(), best_of_done.tolist()):
            row = image * beams + beam
            length = int(lengths[row])
            log_prob = float(scores[image, beam])
            results[int(active[image])] = DecodedCaption(
                token_ids=sequences[row, :length].tolist(),
                log_prob=log_prob,
                score=log_prob / float(length_penalty(lengths[row], length_penalty_alpha)),
                alphas=alphas[row, :length].cpu(),
                finished=bool(finished[row]),
            )
        keep = ~done
        if not bool(keep.any()):
            break
        keep_rows = keep.repeat_interleave(beams)
        active, scores, words = active[keep], scores[keep], words[keep_rows]
        state = (state[0][keep_rows], state[1][keep_rows])
        regions, projected = regions[keep], projected[keep]
        sequences, alphas = sequences[keep_rows], alphas[keep_rows]
        finished, lengths = finished[keep_rows], lengths[keep_rows]
    return results  # type: ignore[return-value]


def _best_beams(scores: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N, K) beam scores and word counts -> (N,) index of the best beam after the penalty."""
    return (scores / length_penalty(lengths, alpha)).argmax(dim=1)
