"""Caption a list of records and score the captions against their references.

Used by the training loop (validation every epoch) and ``captioner evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from captioner.data.batches import ImageSet, collate_images
from captioner.data.records import CaptionRecord, ImageId
from captioner.data.text import Vocabulary
from captioner.decoding import DecodedCaption, DecodeSettings, EndingRule, SearchTokens, decode
from captioner.metrics.score import CaptionScores, score_captions
from captioner.models.captioning import CaptioningModel
from captioner.training.inputs import InputKind, regions_from_inputs

if TYPE_CHECKING:
    from captioner.guidance import Guide
    from captioner.training.config import RunConfig


def run_decode_settings(config: RunConfig, beam_size: int | None = None) -> DecodeSettings:
    """The decoding a run's config asks for (its ``eval`` settings, captions up to the data's
    longest); the loop validates with it. ``beam_size`` overrides the config's."""
    return DecodeSettings(
        beam_size=config.eval.beam_size if beam_size is None else beam_size,
        max_length=config.data.max_caption_words,
        length_penalty=config.eval.length_penalty,
        no_repeat_ngram_size=config.eval.no_repeat_ngram_size,
        block_dangling_endings=config.eval.block_dangling_endings,
    )


def search_tokens(vocabulary: Vocabulary) -> SearchTokens:
    """<pad>, <start> and <unk> are never written into a caption; the vocabulary's
    ``CaptionEndings`` become the search's ``EndingRule`` (as ids)."""
    endings = None
    if vocabulary.endings is not None:
        known = vocabulary.token_id

        def pair_ids(pairs: frozenset[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
            return tuple(sorted((known(a), known(b)) for a, b in pairs if a in vocabulary and b in vocabulary))

        endings = EndingRule(
            words=tuple(sorted(known(w) for w in vocabulary.endings.words if w in vocabulary)),
            pairs=pair_ids(vocabulary.endings.pairs),
            allowed_pairs=pair_ids(vocabulary.endings.allowed_pairs),
        )
    return SearchTokens(
        start_id=vocabulary.start_id,
        end_id=vocabulary.end_id,
        banned_ids=(vocabulary.pad_id, vocabulary.start_id, vocabulary.unk_id),
        endings=endings,
    )


@dataclass
class Prediction:
    record: CaptionRecord
    caption: str
    decoded: DecodedCaption
    guided_by: str | None = None
    """The classifier word the caption was made to name (``caption_records(guide=...)``)."""


@torch.inference_mode()
def caption_records(
    model: CaptioningModel,
    records: Sequence[CaptionRecord],
    load_input: Callable[[CaptionRecord, int], torch.Tensor],
    input_kind: InputKind,
    vocabulary: Vocabulary,
    settings: DecodeSettings,
    device: torch.device,
    batch_size: int = 100,
    num_workers: int = 0,
    progress: bool = True,
    guide: Guide | None = None,
) -> list[Prediction]:
    """Caption ``records`` in batches; with ``guide``, captions name what the encoder's
    classifier confidently sees (``captioner.guidance``). Validation during training runs
    without one, so that checkpoints are chosen on the decoder alone."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(
        ImageSet(list(records), load_input),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
    )
    tokens = search_tokens(vocabulary)
    predictions = []
    for batch in tqdm(loader, desc="captioning", unit="batch", leave=False, disable=not progress):
        inputs = batch.inputs.to(device, non_blocking=True)
        regions = regions_from_inputs(model, inputs, input_kind).float()
        readings = guide.read(regions) if guide is not None else [None] * regions.size(0)
        constraints = [None if r is None else r.constraint for r in readings]
        decoded_batch = decode(model.decoder, regions, tokens, settings, constraints)
        for index, decoded, reading in zip(batch.record_indices.tolist(), decoded_batch, readings):
            if guide is not None and reading is not None:
                caption = " ".join(guide.caption_words(decoded, reading))
                predictions.append(Prediction(records[index], caption, decoded, guide.guided_by(decoded, reading)))
            else:
                caption = " ".join(vocabulary.decode(decoded.token_ids))
                predictions.append(Prediction(records[index], caption, decoded))
    model.train(was_training)
    return predictions


def score_predictions(predictions: Sequence[Prediction], meteor: bool | str = "auto") -> CaptionScores:
    references: dict[ImageId, list[str]] = {p.record.image_id: list(p.record.captions) for p in predictions}
    candidates: dict[ImageId, str] = {p.record.image_id: p.caption for p in predictions}
    return score_captions(references, candidates, meteor=meteor)


def results_json(predictions: Sequence[Prediction]) -> list[dict]:
    """COCO results format: ``[{"image_id", "caption"}]``."""
    return [{"image_id": p.record.image_id, "caption": p.caption} for p in predictions]
