"""Greedy decoding: the most likely next word at every step, for a whole batch at once."""

from __future__ import annotations

import torch

from captioner.decoding.endings import ending_lookup
from captioner.decoding.types import DecodedCaption, SearchTokens, banned_mask, search_inputs
from captioner.models.decoder import ShowAttendTellDecoder


@torch.inference_mode()
def greedy_decode(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    max_length: int = 20,
) -> list[DecodedCaption]:
    """Decode (B, R, D) region features into B captions of at most ``max_length`` words."""
    batch = regions.size(0)
    device = regions.device
    regions, projected, state = search_inputs(decoder, regions)
    words = torch.full((batch,), tokens.start_id, dtype=torch.long, device=device)
    mask = banned_mask(decoder.vocab_size, tokens.banned_ids, device)
    endings = ending_lookup(tokens.endings, decoder.vocab_size, tokens.start_id, tokens.end_id, device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    log_prob = torch.zeros(batch, device=device)
    chosen, alphas = [], []
    for _ in range(max_length):
        out = decoder.step(words, state, regions, projected)
        step_log_probs = torch.log_softmax(out.logits.float(), dim=-1) + mask
        if endings is not None and chosen:
            endings.apply_(step_log_probs, torch.stack(chosen[-2:], dim=1))
        best_log_prob, words = step_log_probs.max(dim=-1)
        log_prob += torch.where(finished, 0.0, best_log_prob)
        words = torch.where(finished, tokens.end_id, words)
        chosen.append(words)
        alphas.append(out.alpha.float())
        finished |= words == tokens.end_id
        state = out.state
        if bool(finished.all()):
            break
    chosen_ids = torch.stack(chosen, dim=1).cpu()
    chosen_alphas = torch.stack(alphas, dim=1).cpu()
    results = []
    for i in range(batch):
        ids = chosen_ids[i].tolist()
        length = ids.index(tokens.end_id) if tokens.end_id in ids else len(ids)
        results.append(
            DecodedCaption(
                token_ids=ids[:length],
                log_prob=float(log_prob[i]),
                score=float(log_prob[i]),
                alphas=chosen_alphas[i, :length],
                finished=length < len(ids),
            )
        )
    return results
