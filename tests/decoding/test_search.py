"""Search strategies against a toy decoder whose word probabilities are written down."""

import dataclasses
import math

import pytest
import torch

from captioner.decoding import DecodeSettings, EndingRule, SearchTokens, beam_search, decode, greedy_decode
from captioner.decoding.beam import repeated_ngram_mask
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.models.decoder import StepOutput

PAD, START, END, UNK, A, B, C = range(7)
TOKENS = SearchTokens(start_id=START, end_id=END, banned_ids=(PAD, START, UNK))


class TableDecoder:
    """Next-word probabilities depend only on the previous word (a bigram table)."""

    vocab_size = 7

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        self.log_probs = torch.full((7, 7), -30.0)
        for previous, nexts in table.items():
            for word, p in nexts.items():
                self.log_probs[previous, word] = math.log(p)

    def begin(self, regions, with_context_terms=False):
        n = regions.size(0)
        return regions, (torch.zeros(n, 1), torch.zeros(n, 1))

    def step(self, previous, state, regions, projected):
        alpha = torch.full((previous.size(0), regions.size(1)), 1.0 / regions.size(1))
        return StepOutput(self.log_probs[previous], state, alpha)


# Greedy takes "a" (0.55) then "c" (0.35) then <end>: p = 0.1925.
# The better caption is "b <end>": 0.45 * 0.9 = 0.405, which a beam of 2 finds.
GARDEN_PATH = {
    START: {A: 0.55, B: 0.45},
    A: {C: 0.35, B: 0.33, END: 0.32},
    B: {END: 0.9, C: 0.1},
    C: {END: 1.0},
}


def test_greedy_follows_the_locally_best_word():
    (caption,) = greedy_decode(TableDecoder(GARDEN_PATH), torch.zeros(1, 4, 2), TOKENS)
    assert caption.token_ids == [A, C]
    assert math.isclose(caption.log_prob, math.log(0.55 * 0.35 * 1.0), rel_tol=1e-5)
    assert caption.finished


def test_beam_finds_the_globally_better_caption():
    (caption,) = beam_search(TableDecoder(GARDEN_PATH), torch.zeros(1, 4, 2), TOKENS, beam_size=2)
    assert caption.token_ids == [B]
    assert math.isclose(caption.log_prob, math.log(0.405), rel_tol=1e-5)
    assert caption.alphas.shape == (1, 4)


def test_banned_words_are_never_emitted_even_when_most_likely():
    table = {START: {UNK: 0.9, A: 0.1}, A: {UNK: 0.8, PAD: 0.1, END: 0.1}}
    for search in (greedy_decode, beam_search):
        (caption,) = search(TableDecoder(table), torch.zeros(1, 4, 2), TOKENS)
        assert caption.token_ids == [A]


def test_caption_that_never_ends_returns_its_best_partial_caption():
    table = {START: {A: 1.0}, A: {A: 0.6, B: 0.4}, B: {A: 0.6, B: 0.4}}
    for beam_size in (1, 3):
        (caption,) = beam_search(TableDecoder(table), torch.zeros(1, 4, 2), TOKENS, beam_size=beam_size, max_length=5)
        assert caption.token_ids == [A, A, A, A, A]
        assert not caption.finished
        assert caption.alphas.shape == (5, 4)


def test_no_repeat_ngram_blocks_repeats():
    table = {START: {A: 1.0}, A: {A: 0.6, B: 0.3, END: 0.1}, B: {A: 0.6, B: 0.3, END: 0.1}}
    (caption,) = beam_search(TableDecoder(table), torch.zeros(1, 4, 2), TOKENS, beam_size=2, max_length=6, no_repeat_ngram_size=2)
    words = caption.token_ids
    bigrams = list(zip(words, words[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_repeated_ngram_mask_known_case():
    sequences = torch.tensor([[4, 5, 4], [4, 5, 6]])
    mask = repeated_ngram_mask(sequences, ngram_size=2, vocab_size=8)
    # Row 0 ends with 4, and "4 5" occurred: 5 is banned. Row 1 ends with 6: nothing banned.
    assert torch.isinf(mask[0, 5]) and torch.isfinite(mask[0]).sum() == 7
    assert torch.isfinite(mask[1]).all()


def real_decoder() -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=16, hidden_dim=32, attention_dim=16, dropout=0.0)
    return ShowAttendTellDecoder(config, vocab_size=30, feature_dim=8).eval()


def test_beam_of_one_is_greedy_and_batched_beam_equals_one_image_at_a_time():
    decoder = real_decoder()
    regions = torch.randn(6, 5, 8)
    greedy = greedy_decode(decoder, regions, TOKENS, max_length=10)
    beam_one = beam_search(decoder, regions, TOKENS, beam_size=1, max_length=10)
    assert [c.token_ids for c in greedy] == [c.token_ids for c in beam_one]
    batched = beam_search(decoder, regions, TOKENS, beam_size=3, max_length=10)
    single = [beam_search(decoder, regions[i : i + 1], TOKENS, beam_size=3, max_length=10)[0] for i in range(6)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    for a, b in zip(batched, single):
        assert math.isclose(a.log_prob, b.log_prob, rel_tol=1e-5)
        torch.testing.assert_close(a.alphas, b.alphas)


def test_beam_search_is_deterministic_and_no_worse_than_greedy():
    decoder = real_decoder()
    regions = torch.randn(4, 5, 8)
    settings = DecodeSettings(beam_size=4, max_length=8)
    first = decode(decoder, regions, TOKENS, settings)
    second = decode(decoder, regions, TOKENS, settings)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    greedy = decode(decoder, regions, TOKENS, DecodeSettings(beam_size=1, max_length=8))
    for beam, plain in zip(first, greedy):
        if beam.finished and plain.finished:
            assert beam.log_prob >= plain.log_prob - 1e-5


def test_beam_search_gives_the_same_captions_with_and_without_precomputed_context_terms():
    """Large batches decode from the regions, small ones from precomputed terms: same captions."""
    from captioner.decoding.types import CONTEXT_TERMS_MAX_IMAGES

    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=8, hidden_dim=12, attention_dim=6, dropout=0.0)
    decoder = ShowAttendTellDecoder(config, vocab_size=7, feature_dim=10).eval()
    regions = torch.randn(CONTEXT_TERMS_MAX_IMAGES + 4, 5, 10)
    together = beam_search(decoder, regions, TOKENS, beam_size=3, max_length=8)  # plain path
    alone = [beam_search(decoder, regions[i : i + 1], TOKENS, beam_size=3, max_length=8)[0]
             for i in range(regions.size(0))]  # precomputed terms
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for a, b in zip(together, alone):
        assert math.isclose(a.log_prob, b.log_prob, rel_tol=1e-4, abs_tol=1e-5)
        torch.testing.assert_close(a.alphas, b.alphas, rtol=1e-4, atol=1e-5)


def test_no_images_decode_to_no_captions():
    for beam_size in (1, 3):
        settings = DecodeSettings(beam_size=beam_size)
        assert decode(real_decoder(), torch.zeros(0, 5, 8), TOKENS, settings) == []


# "a" usually ends the caption, but the rule below says captions never end on "a".
DANGLING = {START: {A: 1.0}, A: {END: 0.6, B: 0.4}, B: {END: 1.0}}


def test_ending_lookup_blocks_words_and_pairs_but_not_allowed_pairs():
    from captioner.decoding.endings import EndingLookup

    rule = EndingRule(words=(A,), pairs=((C, B),), allowed_pairs=((B, A),))
    lookup = EndingLookup(rule, vocab_size=7, start_id=START, end_id=END, device=torch.device("cpu"))
    sequences = torch.tensor([[A, A], [B, A], [C, A], [C, B], [A, B], [B, C]])
    assert lookup.blocked(sequences).tolist() == [True, False, True, True, False, False]
    assert lookup.blocked(torch.tensor([[A], [B]])).tolist() == [True, False]  # previous is <start>
    assert lookup.blocked(torch.empty(2, 0, dtype=torch.long)).tolist() == [False, False]


@pytest.mark.parametrize("search", [greedy_decode, beam_search])
def test_a_caption_does_not_end_where_the_rule_forbids(search):
    decoder, regions = TableDecoder(DANGLING), torch.zeros(1, 4, 2)
    (plain,) = search(decoder, regions, TOKENS)
    assert plain.token_ids == [A]
    ruled = dataclasses.replace(TOKENS, endings=EndingRule(words=(A,)))
    (caption,) = search(decoder, regions, ruled)
    assert caption.token_ids == [A, B] and caption.finished
    assert math.isclose(caption.log_prob, math.log(0.4), rel_tol=1e-5)  # the model's own probabilities
    # An allowed pair lifts the rule for that pair only (a one-word caption's previous word is <start>).
    allowed = dataclasses.replace(TOKENS, endings=EndingRule(words=(A,), allowed_pairs=((START, A),)))
    assert search(decoder, regions, allowed)[0].token_ids == [A]
    # A pair alone blocks the same ending.
    paired = dataclasses.replace(TOKENS, endings=EndingRule(pairs=((START, A),)))
    assert search(decoder, regions, paired)[0].token_ids == [A, B]


def test_decode_applies_the_rule_only_when_settings_ask_for_it():
    decoder, regions = TableDecoder(DANGLING), torch.zeros(2, 4, 2)
    ruled = dataclasses.replace(TOKENS, endings=EndingRule(words=(A,)))
    for beam_size in (1, 3):
        off = DecodeSettings(beam_size=beam_size)
        on = dataclasses.replace(off, block_dangling_endings=True)
        assert [c.token_ids for c in decode(decoder, regions, ruled, off)] == [[A], [A]]
        assert [c.token_ids for c in decode(decoder, regions, ruled, on)] == [[A, B], [A, B]]
        assert [c.token_ids for c in decode(decoder, regions, TOKENS, on)] == [[A], [A]]  # no rule known


def test_ending_lookup_agrees_with_the_rule_on_every_pair():
    from captioner.decoding.endings import EndingLookup

    # Overlaps on purpose: a blocked pair of a blocked word, an allowed pair of a free word, and a
    # pair both blocked and allowed (blocked wins, as in CaptionEndings.dangling).
    rule = EndingRule(words=(A, C), pairs=((A, A), (B, B), (C, C)), allowed_pairs=((B, A), (A, B), (C, C)))

    def dangling(previous: int, last: int) -> bool:
        pair = (previous, last)
        return pair in rule.pairs or (last in rule.words and pair not in rule.allowed_pairs)

    lookup = EndingLookup(rule, vocab_size=7, start_id=START, end_id=END, device=torch.device("cpu"))
    pairs = [(p, q) for p in (START, A, B, C) for q in (A, B, C)]
    sequences = torch.tensor(pairs)
    assert lookup.blocked(sequences).tolist() == [dangling(p, q) for p, q in pairs]
