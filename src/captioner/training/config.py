"""The run's configuration: one typed dataclass, saved as ``config.json`` in every run directory.

CLI flags map onto these fields; ``--config FILE`` loads a JSON recipe (``configs/``). Loading is
strict: an unknown field or a value of the wrong type is an error that names the field, because a
typo that silently falls back to a default wastes a training run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from captioner.encoders.base import EncoderConfig
from captioner.errors import ConfigError
from captioner.guidance import DEFAULT_MARGIN, DEFAULT_THRESHOLD, DEFAULT_TRUST
from captioner.models.decoder import DecoderConfig
from captioner.models.captioning import PRECISIONS

T = TypeVar("T")


@dataclass
class DataConfig:
    path: str = ""
    """A dataset directory or annotation file; any format ``captioner.data.readers`` knows."""
    format: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    min_word_count: int = 5
    max_caption_words: int = 20
    """Longer training captions are cut; also the decoding limit."""
    captions_per_image: int = 5
    """How many of an image's captions are trained on per epoch (each a separate example)."""
    group_captions: bool = False
    """Cross-entropy training: put all ``captions_per_image`` captions an image has in an epoch in
    the same batch, the image's input stored once, so that the encoder (where it runs) and the
    decoder's projection of its regions run once per image instead of once per caption. A batch
    then holds ``optim.batch_size // captions_per_image`` images (at least one) with all their
    captions: ``optim.batch_size`` still counts captions, rounded down to whole images. The epoch
    trains on the same captions as without it, in another order and other batches. Not for
    self-critical training, whose examples are images already."""
    num_workers: int = 0
    feature_cache: str | None = None
    """Directory of cached encoder features (``captioner features``); ``None`` runs the encoder."""
    mirror_feature_cache: str | None = None
    """Features of the same photos flipped left to right (``captioner features --mirror``): each
    time a training photo is read, its mirror image is read instead with ``mirror_probability``.
    Photos with a caption that says "left" or "right" are never mirrored (the caption would turn
    false). Validation always reads ``feature_cache``."""
    mirror_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.mirror_probability <= 1.0:
            raise ConfigError(f"data.mirror_probability must be between 0 and 1, got {self.mirror_probability}")


@dataclass
class OptimConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 4e-4
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    """"cosine" (to ``min_lr_ratio``), "step" (x0.8 every ``step_epochs``) or "constant"."""
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    step_epochs: int = 3
    grad_clip: float = 5.0
    attention_regularization: float = 1.0
    """Lambda of the doubly stochastic attention penalty."""
    label_smoothing: float = 0.0
    early_stopping_patience: int = 5
    """Stop after this many epochs without a better validation score (0 turns it off)."""
    accumulation_steps: int = 1
    """Cut each batch into this many pieces whose gradients add up before one update: the same
    update as the whole batch, in less memory."""
    save_every_steps: int = 200
    """Also save the resume state every this many steps inside an epoch (0: only at epoch ends);
    ``--resume`` continues from the exact batch, bit for bit."""
    max_bad_steps: int = 10
    """Stop with an error after this many consecutive steps with a non-finite loss or gradient
    (each one is skipped and logged)."""
    scheduled_sampling_max: float = 0.0
    """Scheduled sampling (cross-entropy runs): the highest probability of feeding the decoder
    its own sampled word instead of the reference word; 0 turns it off."""
    scheduled_sampling_start_epoch: int = 2
    """The first epoch (from 1) that samples; the probability then grows by
    ``scheduled_sampling_increase`` each epoch up to ``scheduled_sampling_max``."""
    scheduled_sampling_increase: float = 0.05
    objective: str = "cross_entropy"
    """"cross_entropy" (teacher forcing) or "self_critical" (CIDEr-D reward; see ``scst``).
    Self-critical training starts from a trained model: set ``init_from``."""
    weight_average_decay: float = 0.0
    """Above 0 (e.g. 0.99): keep an exponential moving average of the weights, updated after
    every step with this decay; validation scores it and the run saves it
    (``captioner.training.averaging``). 0 turns it off."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight_average_decay < 1.0:
            raise ConfigError(
                f"optim.weight_average_decay must be at least 0 and below 1 (0: off), got {self.weight_average_decay}"
            )


@dataclass
class SelfCriticalConfig:
    """Self-critical sequence training (``optim.objective = "self_critical"``)."""

    samples: int = 5
    """Captions sampled per image each step."""
    baseline: str = "mean"
    """"mean" (of the image's other samples) or "greedy" (the greedy caption's reward)."""
    max_words: int = 16
    """Longest sampled caption."""
    temperature: float = 1.0
    dropout: bool = True
    """Keep the decoder's dropout on while sampling (as ruotianluo's code does); off samples
    from the model that will caption at test time."""
    reward_end_token: bool = False
    """Score <end> as a word of every finished caption and of every reference (as ruotianluo's
    ``array_to_str`` and ``prepro_ngrams`` do), so that the n-grams "red <end>", "of a <end>"
    must match how people end captions: a caption cut off mid-phrase loses reward."""
    cross_entropy_weight: float = 0.0
    """Add this times the teacher-forced cross-entropy (with the attention penalty) of one human
    caption per image to the policy-gradient loss (a mixed objective, Paulus et al. 2018): it
    holds the policy near the people's wording while the reward pulls it towards CIDEr-D. Each
    epoch an image is forced on its next reference, in turn. 0: pure self-critical."""


@dataclass
class EvalConfig:
    beam_size: int = 3
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    block_dangling_endings: bool = True
    """No caption ends on a word or pair of words that the training captions (almost) never end
    on ("... playing with a red"); the facts are counted when the vocabulary is built and kept
    in ``vocab.json`` (a vocabulary written before them has none, and this changes nothing)."""
    metric: str = "CIDEr"
    """Validation metric that picks the best checkpoint."""
    max_images: int = 0
    """Validate on the first N images of the split (0 = all)."""
    batch_size: int = 100
    guidance: bool = True
    """Captioning and evaluating photos: make a caption name what the encoder's ImageNet
    classifier confidently sees (``captioner.guidance``); no effect for encoders without a
    classifier, nor on validation during training."""
    guidance_threshold: float = DEFAULT_THRESHOLD
    """Guide only when the classifier's top category, summed with the categories of the same
    caption word, has at least this probability."""
    guidance_trust: float = DEFAULT_TRUST
    """From this probability on the classifier is trusted: the guided caption is taken whatever
    its score (above 1: never)."""
    guidance_margin: float | None = DEFAULT_MARGIN
    """Below ``guidance_trust``, keep the unguided caption when the guided one's
    length-normalised log-probability is more than this lower (None: always take the guided
    one)."""
    mirror_weight: float = 0.0
    """Captioning and evaluating photos: also encode each photo flipped left to right and mix
    that grid, flipped back, into the photo's own with this weight (0: off; 0.5: their mean).
    A second CNN forward per photo; validation during training (cached features) never does."""
    precision: str = "fp32"
    """What captioning with this model runs in unless the caller asks otherwise (``captioner
    caption --precision``, ``Captioner.from_pretrained(precision=)``): "fp32", "bf16" or "int8"
    (``captioner.models.captioning.PRECISIONS``), each where the device has the kernels, else
    fp32. Validation during training always runs in fp32."""

    def __post_init__(self) -> None:
        # Checked here, where the file is being read, rather than when a guide is built from it.
        if not 0.0 <= self.guidance_threshold <= 1.0:
            raise ConfigError(
                f"eval.guidance_threshold must be a probability between 0 and 1, got {self.guidance_threshold}"
            )
        if not self.guidance_trust >= 0.0:
            raise ConfigError(
                f"eval.guidance_trust must be a probability (above 1: never trust), got {self.guidance_trust}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"eval.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0.0 <= self.mirror_weight <= 1.0:
            raise ConfigError(f"eval.mirror_weight must be between 0 and 1 (0: off), got {self.mirror_weight}")
        if self.guidance_margin is not None and not self.guidance_margin >= 0.0:
            raise ConfigError(
                f"eval.guidance_margin must be at least 0 (null: no margin), got {self.guidance_margin}"
            )


INIT_WEIGHTS = ("best", "last")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(name="efficientnet_lite0"))
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scst: SelfCriticalConfig = field(default_factory=SelfCriticalConfig)
    init_from: str | None = None
    """A run directory whose weights (and vocabulary) this run starts from, e.g. the
    cross-entropy run that self-critical training fine-tunes."""
    init_weights: str = "best"
    """Which of ``init_from``'s weights: "best" (its ``model.safetensors``, the epoch that
    scored highest on dev) or "last" (the weights of its last epoch, from its ``last/`` training
    state; the weight average where it kept one). Self-critical training climbed faster, though
    no higher, from a cross-entropy model that had fit its training captions for longer
    (BENCHMARKS.md)."""
    seed: int = 0
    device: str = "auto"
    """"auto" uses CUDA when present, else CPU."""
    mixed_precision: bool = True
    """bf16/fp16 autocast on CUDA; ignored on CPU (see ``cpu_bf16``)."""
    cpu_bf16: bool = False
    """bf16 autocast when training on a CPU that computes bfloat16 natively (AVX512-BF16 or
    AMX): on the 2-core AVX512-BF16 VM a Flickr8k epoch took 1.6x less time with cross-entropy
    and 1.4x less with self-critical training (BENCHMARKS.md has what it did to the dev scores).
    Off by default, so that a CPU run gives the same numbers on every machine; ignored on other
    CPUs (with a warning) and on CUDA."""
    compile: bool = False
    """``torch.compile`` the decoder for training (worth it on GPUs for long runs)."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""

    def __post_init__(self) -> None:
        if self.init_weights not in INIT_WEIGHTS:
            raise ConfigError(f"init_weights must be one of {', '.join(INIT_WEIGHTS)}, not {self.init_weights!r}")
        if self.data.group_captions and self.optim.objective == "self_critical":
            raise ConfigError(
                "data.group_captions applies to cross-entropy training (optim.objective=cross_entropy); "
                "self-critical training takes each image once already: turn it off for this run"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        return dataclass_from_dict(cls, values, source)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid JSON ({error}); fix or regenerate it") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object of settings")
        return cls.from_dict(values, source=str(path))


def apply_overrides(values: dict[str, Any], assignments: list[str]) -> None:
    """Apply ``section.field=value`` strings (value parsed as JSON when it can be) in place."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.field=value, got {assignment!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {parent!r} is not a section")
        target[leaf] = value


def dataclass_from_dict(cls: type[T], values: dict[str, Any], source: str, prefix: str = "") -> T:
    """Build ``cls`` from plain JSON values, checking every field name and type."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(hints[name], value, source, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required field is absent
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} is incomplete ({error})") from None
    except ConfigError as error:  # a value its dataclass refuses: say which file holds it
        message = str(error)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _convert(hint: Any, value: Any, source: str, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: setting '{name}' must be an object")
        return dataclass_from_dict(hint, value, source, prefix=f"{name}.")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, source, name)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: setting '{name}' has the wrong type ({value!r})")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
            raise ConfigError(
                f"{source}: setting '{name}' must be {hint.__name__}, got {value!r}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: setting '{name}' must be a list")
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        items = [_convert(item_hint, v, source, name) for v in value]
        return tuple(items) if origin is tuple else items
    return value
