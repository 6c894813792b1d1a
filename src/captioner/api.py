"""``Captioner``: the one door to a trained model, for the CLI, the server and users' code.

    from captioner.api import Captioner
    captioner = Captioner.from_pretrained()            # the model shipped in the package
    captioner = Captioner.from_pretrained("runs/my")   # or any run directory (or ensemble of runs)
    for result in captioner.caption(["a.jpg", "b.jpg"], beam_size=3):
        print(result.source, result.caption, result.attention.shape)

A picture that cannot be read gives a result with ``error`` set; the others are still captioned.
Each result also carries the encoder's ImageNet labels, and - where the classifier is confident -
the caption names what it sees (``guided_by``; ``caption(..., guidance=False)`` turns it off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captioner.data.images import load_rgb_image, load_rgb_image_bytes, rgb_image
from captioner.data.readers import load_records
from captioner.data.scenes.checker import corpus_grounded_precision
from captioner.data.scenes.truth import find_scene_truths
from captioner.data.text import Vocabulary
from captioner.decoding import DecodeSettings, decode
from captioner.errors import BadImageError, CheckpointError
from captioner.guidance import Guide, ImageGuidance, Label
from captioner.models.captioning import CaptioningModel
from captioner.pretrained import resolve_pretrained
from captioner.training import checkpoint
from captioner.training.config import RunConfig
from captioner.training.evaluation import (
    Prediction,
    caption_records,
    run_decode_settings,
    score_predictions,
    search_tokens,
)
from captioner.training.ensemble import is_ensemble, load_ensemble
from captioner.training.inputs import InputKind, PixelInput
from captioner.training.loop import resolve_device, restore_model

ImageInput = str | Path | bytes | Image.Image


@dataclass
class CaptionResult:
    source: str
    """The file path, or ``<image N>`` for in-memory pictures."""
    caption: str | None = None
    words: list[str] = field(default_factory=list)
    score: float | None = None
    """Log-probability of the caption under the model (higher is more confident)."""
    attention: np.ndarray | None = None
    """(len(words), grid_h, grid_w): where the model looked for each word; rows sum to 1."""
    error: str | None = None
    image_size: tuple[int, int] | None = None
    """(width, height) of the picture as loaded, after EXIF rotation."""
    labels: list[Label] = field(default_factory=list)
    """The encoder's top-5 ImageNet categories: ``label`` (as torchvision names it), ``word`` (its
    plain caption word, None for worn things such as a jersey) and ``confidence``; empty for
    encoders without an ImageNet classifier."""
    guided_by: str | None = None
    """The classifier's word that the caption was made to name, or None (not confident enough,
    guidance off, or naming it would have needed a caption the model could not write)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, include_attention: bool = False) -> dict[str, Any]:
        values: dict[str, Any] = {"source": self.source, "caption": self.caption}
        if self.error is not None:
            values["error"] = self.error
            return values
        values["score"] = self.score
        values["words"] = self.words
        values["labels"] = [label.to_dict() for label in self.labels]
        values["guided_by"] = self.guided_by
        if include_attention and self.attention is not None:
            values["attention"] = np.round(self.attention, 5).tolist()
        return values


class Captioner:
    def __init__(
        self,
        model: CaptioningModel,
        vocabulary: Vocabulary,
        config: RunConfig,
        device: torch.device,
        source: str = "",
        metrics: dict | None = None,
        precision: str | None = None,
    ) -> None:
        self.model = model.eval().use_channels_last().use_mirror_average(config.eval.mirror_weight)
        self.vocabulary = vocabulary
        self.config = config
        self.device = device
        self.requested_precision = precision or config.eval.precision
        """``precision``, or where that is None the model's own (``eval.precision``)."""
        self.precision = self.model.use_precision(self.requested_precision, device)
        """What the model runs in: the requested precision where the device has its kernels, else fp32."""
        self.source = source
        self.metrics = metrics or {}
        self._tokens = search_tokens(vocabulary)
        # None for encoders without an ImageNet classifier: captions are then never guided and
        # carry no labels.
        self.guide = Guide.for_model(
            self.model.encoder,
            self.grid_size,
            vocabulary,
            threshold=config.eval.guidance_threshold,
            trust=config.eval.guidance_trust,
        )

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path | None = None, device: str = "auto", precision: str | None = None
    ) -> Captioner:
        """Load a shipped model by name (default: the package's real-photo model) or a run directory.

        ``precision`` (default: the model's ``eval.precision``; the shipped default model's is
        "int8"): "fp32" is exact; "bf16" runs the CNN and the decoder's large products in
        bfloat16 where the device computes it natively (a CPU with AVX512-BF16 or AMX, a recent
        GPU); "int8" runs the decoder's large products on a CPU with int8 weights (fbgemm, x86).
        The last two are faster and a little less exact; where the device lacks the kernels the
        model stays fp32 and ``captioner.precision`` says so.
        """
        # A recipe of several stages stands for its last stage, which may be an ensemble.
        run_dir = checkpoint.final_stage(resolve_pretrained(name_or_path))
        resolved = resolve_device(device)
        if is_ensemble(run_dir):
            ensemble = load_ensemble(run_dir)
            return cls(
                ensemble.model.to(resolved), ensemble.vocabulary, ensemble.config, resolved, str(run_dir),
                ensemble.metrics, precision,
            )
        loaded = checkpoint.load_run(run_dir)
        model = restore_model(loaded)
        return cls(
            model.to(resolved), loaded.vocabulary, loaded.config, resolved, str(run_dir), loaded.metrics, precision
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.model.encoder.grid_size(self.config.encoder.image_size)

    def default_settings(self, beam_size: int = 3) -> DecodeSettings:
        margin = self.config.eval.guidance_margin
        return dataclasses.replace(
            run_decode_settings(self.config, beam_size), constraint_margin=float("inf") if margin is None else margin
        )

    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        beam_size: int = 3,
        max_length: int | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        batch_size: int = 16,
        guidance: bool | None = None,
        block_dangling_endings: bool | None = None,
    ) -> list[CaptionResult]:
        """Caption one picture or many; one result per input, in order.

        ``guidance`` (default: the model's ``eval.guidance``) makes a caption name what the
        encoder's ImageNet classifier confidently sees; labels are returned either way.
        ``block_dangling_endings`` (default: the model's ``eval.block_dangling_endings``) keeps a
        caption from ending where its training captions never end ("... with a red").
        """
        if isinstance(images, (str, Path, bytes, Image.Image)):
            images = [images]
        settings = self.default_settings(beam_size)
        settings = DecodeSettings(
            beam_size=beam_size,
            max_length=max_length or settings.max_length,
            length_penalty=settings.length_penalty if length_penalty is None else length_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size,
            constraint_margin=settings.constraint_margin,
            block_dangling_endings=(
                settings.block_dangling_endings if block_dangling_endings is None else block_dangling_endings
            ),
        )
        guide = self.config.eval.guidance if guidance is None else guidance
        results: list[CaptionResult] = []
        for start in range(0, len(images), batch_size):
            results.extend(self._caption_batch(images[start : start + batch_size], start, settings, guide))
        return results

    def evaluate(
        self,
        data: str | Path,
        split: str = "test",
        beam_size: int = 3,
        limit: int = 0,
        batch_size: int = 50,
        meteor: bool | str = "auto",
        progress: bool = True,
        guidance: bool | None = None,
    ) -> Evaluation:
        """Caption every readable image of a split and score the captions against its references
        (guided as ``caption`` is, unless ``guidance`` says otherwise)."""
        records = load_records(data, split=split)
        if limit:
            records = records[:limit]
        readable, skipped = [], []
        for record in records:
            try:
                load_rgb_image(record.image_path)
            except BadImageError as error:
                skipped.append(str(error))
                continue
            readable.append(record)
        predictions = caption_records(
            self.model, readable, PixelInput(self.model.encoder.preprocess), InputKind.PIXELS,
            self.vocabulary, self.default_settings(beam_size), self.device,
            batch_size=batch_size, progress=progress,
            guide=self.guide if (self.config.eval.guidance if guidance is None else guidance) else None,
        )
        metrics: dict[str, float | None] = dict(score_predictions(predictions, meteor=meteor).corpus)
        truths = find_scene_truths(data, split)
        if truths is not None:
            captions = {p.record.image_id: p.caption for p in predictions}
            metrics["grounded_precision"] = corpus_grounded_precision(captions, truths)
        return Evaluation(split, beam_size, predictions, metrics, skipped)

    def _caption_batch(
        self, images: Sequence[ImageInput], offset: int, settings: DecodeSettings, guidance: bool
    ) -> list[CaptionResult]:
        results = []
        pixels = []
        for index, image in enumerate(images):
            result = CaptionResult(source=_describe(image, offset + index))
            try:
                picture = _open(image, result.source)
            except BadImageError as error:
                result.error = str(error)
            else:
                result.image_size = picture.size
                pixels.append(self.model.encoder.preprocess(picture))
            results.append(result)
        readable = [r for r in results if r.ok]
        if not readable:
            return results
        grid_h, grid_w = self.grid_size
        with torch.inference_mode():
            regions = self.model.encode(torch.stack(pixels).to(self.device)).float()
            readings: list[ImageGuidance | None] = [None] * len(readable)
            if self.guide is not None:
                readings = list(self.guide.read(regions, guide=guidance))
            constraints = [None if r is None else r.constraint for r in readings]
            decoded = decode(self.model.decoder, regions, self._tokens, settings, constraints)
        for result, caption, reading in zip(readable, decoded, readings):
            if self.guide is not None and reading is not None:
                result.words = self.guide.caption_words(caption, reading)
                result.labels = list(reading.labels)
                result.guided_by = Guide.guided_by(caption, reading)
            else:
                result.words = self.vocabulary.decode(caption.token_ids)
            result.caption = " ".join(result.words)
            result.score = caption.log_prob
            result.attention = caption.alphas.numpy().reshape(len(result.words), grid_h, grid_w)
        return results


@dataclass
class Evaluation:
    """Captions of a dataset split and their scores."""

    split: str
    beam_size: int
    predictions: list[Prediction]
    metrics: dict[str, float | None]
    """BLEU-1..4, METEOR (None where it cannot run), ROUGE-L, CIDEr, and grounded_precision on
    datasets that carry scene ground truth."""
    skipped: list[str] = field(default_factory=list)
    """One line per image that could not be read."""


def _describe(image: ImageInput, index: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<image {index}>"


def _open(image: ImageInput, source: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return rgb_image(image, source)
    if isinstance(image, bytes):
        return load_rgb_image_bytes(image, source)
    return load_rgb_image(image)


__all__ = ["CaptionResult", "Captioner", "CheckpointError", "Evaluation"]
