"""Constrained beam search and the constraint path of ``decode``: checked against brute force
on a toy decoder whose word probabilities are written down, and against the plain search."""

import dataclasses
import itertools
import math

import pytest
import torch

from captioner.decoding import Constraint, DecodeSettings, SearchTokens, constrained_beam_search, decode
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder, StepOutput

PAD, START, END, UNK, A, B, C, D = range(8)
VOCAB = 8
TOKENS = SearchTokens(start_id=START, end_id=END, banned_ids=(PAD, START, UNK))
WORDS = (END, A, B, C, D)


class TableDecoder:
    """Next-word probabilities depend only on the previous word (a bigram table)."""

    vocab_size = VOCAB

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        self.log_probs = torch.full((VOCAB, VOCAB), -30.0)
        for previous, nexts in table.items():
            for word, p in nexts.items():
                self.log_probs[previous, word] = math.log(p)

    def begin(self, regions, with_context_terms=False):
        n = regions.size(0)
        return regions, (torch.zeros(n, 1), torch.zeros(n, 1))

    def step(self, previous, state, regions, projected):
        alpha = torch.full((previous.size(0), regions.size(1)), 1.0 / regions.size(1))
        return StepOutput(self.log_probs[previous], state, alpha)

    def sequence_log_prob(self, words: tuple[int, ...]) -> float:
        previous, total = START, 0.0
        for word in words:
            total += float(torch.log_softmax(self.log_probs[previous], dim=0)[word])
            previous = word
        return total


# C is unlikely everywhere; the best caption overall is "a b <end>".
TABLE = {
    START: {A: 0.6, B: 0.3, C: 0.05, D: 0.05},
    A: {B: 0.7, C: 0.1, END: 0.2},
    B: {END: 0.8, C: 0.1, D: 0.1},
    C: {END: 0.6, A: 0.2, D: 0.2},
    D: {END: 0.5, C: 0.3, A: 0.2},
}


def best_by_brute_force(decoder: TableDecoder, required: set[int], max_length: int) -> tuple[tuple[int, ...], float]:
    best, best_score = (), -math.inf
    for length in range(1, max_length + 1):
        for words in itertools.product((A, B, C, D), repeat=length - 1):
            if not required & set(words):
                continue
            score = decoder.sequence_log_prob((*words, END))
            if score > best_score:
                best, best_score = words, score
    return best, best_score


@pytest.mark.parametrize("required", [{C}, {D}, {C, D}])
def test_wide_constrained_search_finds_the_best_caption_that_meets_the_constraint(required):
    decoder = TableDecoder(TABLE)
    expected, expected_score = best_by_brute_force(decoder, required, max_length=4)
    (caption,) = constrained_beam_search(
        decoder, torch.zeros(1, 3, 2), TOKENS, [Constraint(tuple(sorted(required)))], beam_size=40, max_length=4
    )
    assert tuple(caption.token_ids) == expected
    assert caption.log_prob == pytest.approx(expected_score, abs=1e-4)
    assert caption.constraint_met
    assert caption.token_ids[caption.constraint_position] in required
    assert required.isdisjoint(caption.token_ids[: caption.constraint_position])


def test_once_ids_are_not_written_after_the_constraint_is_met():
    # Without the rule the best caption meeting {C} is "c a c"-like repetition of C.
    table = {START: {C: 0.9, A: 0.1}, C: {C: 0.9, END: 0.1}, A: {END: 1.0}}
    (caption,) = constrained_beam_search(
        TableDecoder(table), torch.zeros(1, 3, 2), TOKENS, [Constraint((C,), once_ids=(C,))], beam_size=3, max_length=5
    )
    assert caption.token_ids.count(C) == 1


def test_within_puts_the_constraint_word_among_the_first_words():
    table = {START: {A: 0.9, C: 0.1}, A: {B: 0.9, C: 0.1}, B: {C: 0.9, END: 0.1}, C: {END: 1.0}}
    settings = {"beam_size": 3, "max_length": 5}
    (late,) = constrained_beam_search(TableDecoder(table), torch.zeros(1, 3, 2), TOKENS, [Constraint((C,))], **settings)
    assert late.token_ids == [A, B, C]
    (early,) = constrained_beam_search(
        TableDecoder(table), torch.zeros(1, 3, 2), TOKENS, [Constraint((C,), within=1)], **settings
    )
    assert early.token_ids == [C] and early.constraint_position == 0


def test_banned_tokens_stay_banned_and_cannot_be_constraints():
    table = {START: {UNK: 0.9, A: 0.05, C: 0.05}, A: {UNK: 0.9, C: 0.1}, C: {UNK: 0.5, PAD: 0.4, END: 0.1}}
    (caption,) = constrained_beam_search(TableDecoder(table), torch.zeros(1, 3, 2), TOKENS, [Constraint((C,))])
    assert caption.constraint_met and not {PAD, START, UNK} & set(caption.token_ids)
    with pytest.raises(ValueError, match="banned"):
        constrained_beam_search(TableDecoder(table), torch.zeros(1, 3, 2), TOKENS, [Constraint((UNK,))])


def real_decoder() -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=16, hidden_dim=32, attention_dim=16, dropout=0.0)
    return ShowAttendTellDecoder(config, vocab_size=30, feature_dim=8).eval()


def test_batched_constrained_search_equals_one_image_at_a_time():
    decoder = real_decoder()
    regions = torch.randn(5, 6, 8)
    constraints = [Constraint((10, 11)), Constraint((20,), once_ids=(20,)), Constraint((7,), within=2),
                   Constraint((15, 16, 17)), Constraint((29,))]
    settings = {"beam_size": 3, "max_length": 9, "length_penalty_alpha": 1.0, "no_repeat_ngram_size": 3}
    batched = constrained_beam_search(decoder, regions, TOKENS, constraints, **settings)
    for i, caption in enumerate(batched):
        (single,) = constrained_beam_search(decoder, regions[i : i + 1], TOKENS, constraints[i : i + 1], **settings)
        assert caption.token_ids == single.token_ids
        assert caption.log_prob == pytest.approx(single.log_prob, rel=1e-5)
        assert caption.constraint_position == single.constraint_position
        assert caption.alphas.shape == (len(caption.token_ids), 6)
        assert caption.constraint_met and set(caption.token_ids) & set(constraints[i].token_ids)
        assert not {PAD, START, UNK} & set(caption.token_ids)


def test_decode_changes_only_the_captions_that_miss_their_constraint():
    decoder = real_decoder()
    regions = torch.randn(6, 6, 8)
    settings = DecodeSettings(beam_size=3, max_length=9, length_penalty=1.0, no_repeat_ngram_size=3)
    plain = decode(decoder, regions, TOKENS, settings)
    named = plain[1].token_ids[1]  # image 1 already writes this word
    missing = next(t for t in range(4, 30) if t not in plain[3].token_ids)
    constraints = [None, Constraint((named,)), None, Constraint((missing,)), None, None]
    guided = decode(decoder, regions, TOKENS, settings, constraints)
    for i in (0, 2, 4, 5):
        assert guided[i].token_ids == plain[i].token_ids and guided[i].constraint_met is None
    assert guided[1].token_ids == plain[1].token_ids
    assert guided[1].constraint_met and guided[1].constraint_position == plain[1].token_ids.index(named)
    assert missing in guided[3].token_ids and guided[3].constraint_met
    # Naming the word costs log-probability here, so a margin of 0 keeps the plain caption.
    assert guided[3].score < plain[3].score
    strict = decode(decoder, regions, TOKENS, dataclasses.replace(settings, constraint_margin=0.0), constraints)
    assert strict[3].token_ids == plain[3].token_ids and strict[3].constraint_met is False
    assert strict[1].token_ids == plain[1].token_ids and strict[1].constraint_met
    # A constraint's own margin overrides the settings': inf (a word the guide is sure of) takes
    # the guided caption under the strict settings, and 0 keeps the plain one under lenient ones.
    sure = [None, None, None, Constraint((missing,), margin=math.inf), None, None]
    taken = decode(decoder, regions, TOKENS, dataclasses.replace(settings, constraint_margin=0.0), sure)
    assert taken[3].token_ids == guided[3].token_ids and taken[3].constraint_met
    unsure = [None, None, None, Constraint((missing,), margin=0.0), None, None]
    kept = decode(decoder, regions, TOKENS, settings, unsure)
    assert kept[3].token_ids == plain[3].token_ids and kept[3].constraint_met is False


def test_greedy_settings_with_constraints_name_the_word():
    decoder = real_decoder()
    regions = torch.randn(3, 6, 8)
    settings = DecodeSettings(beam_size=1, max_length=8)
    guided = decode(decoder, regions, TOKENS, settings, [Constraint((12,))] * 3)
    for caption in guided:
        assert 12 in caption.token_ids and not {PAD, START, UNK} & set(caption.token_ids)


def test_constrained_search_keeps_the_ending_rule():
    from captioner.decoding import EndingRule

    # Required word A; the best caption that names it ends right after it, which the rule forbids.
    table = {START: {B: 0.6, A: 0.4}, A: {END: 0.7, C: 0.3}, B: {END: 1.0}, C: {END: 1.0}}
    regions = torch.zeros(1, 4, 2)
    (plain,) = constrained_beam_search(TableDecoder(table), regions, TOKENS, [Constraint((A,))], beam_size=2)
    assert plain.token_ids == [A] and plain.constraint_met
    ruled = dataclasses.replace(TOKENS, endings=EndingRule(words=(A,)))
    (caption,) = constrained_beam_search(TableDecoder(table), regions, ruled, [Constraint((A,))], beam_size=2)
    assert caption.token_ids == [A, C] and caption.constraint_met and caption.finished
