"""Model soups: one decoder made by averaging the weights of runs fine-tuned from the same start.

Self-critical runs that start from the same cross-entropy weights (other seeds, other settings)
end at different points of one basin; the element-wise mean of their decoders is a decoder of the
same size and speed that often scores above each of them (Wortsman et al. 2022, "Model soups").
The greedy soup adds the runs in order of their own validation score and keeps each one only if
the mean with it scores higher than without, so it is never below the best single run on the
split it was chosen on (like a best epoch, it is chosen on the validation split).

Every run is validated as the training loop validates the first one: its config's decoding
settings, vocabulary and validation data (a feature cache where the config names one). The runs
must share that vocabulary and decoder shape; only the decoder is averaged, the first run's
encoder is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from captioner.errors import CheckpointError
from captioner.training import checkpoint
from captioner.training.evaluation import caption_records, run_decode_settings, score_predictions
from captioner.training.loop import build_model, prepare_data

Weights = dict[str, torch.Tensor]


def mean_weights(ingredients: Sequence[Weights]) -> Weights:
    """The element-wise mean of state dicts with the same keys and shapes (computed in fp32,
    returned in the first one's dtypes)."""
    return {
        name: torch.stack([weights[name].float() for weights in ingredients]).mean(dim=0).to(tensor.dtype)
        for name, tensor in ingredients[0].items()
    }


@dataclass
class SoupStep:
    added: str
    kept_before: list[str]
    metrics: dict[str, float]
    kept: bool


@dataclass
class SoupResult:
    metric: str
    alone: dict[str, dict[str, float]]
    """Each run's own validation scores."""
    uniform: dict[str, float] | None
    """The mean of all runs (None with fewer than three: the greedy soup has then tried it)."""
    steps: list[SoupStep] = field(default_factory=list)
    ingredients: list[str] = field(default_factory=list)
    """The runs the greedy soup kept, best first."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The greedy soup's scores."""
    weights: Weights = field(default_factory=dict)
    """The greedy soup's decoder weights."""
    images: int = 0
    """Validation images each score is over (set by ``soup_runs``)."""
    decoding: dict = field(default_factory=dict)
    """The decoding settings they were captioned with (set by ``soup_runs``)."""


def greedy_soup(
    candidates: dict[str, Weights],
    score: Callable[[Weights, str], dict[str, float]],
    metric: str = "CIDEr",
    uniform: bool = True,
) -> SoupResult:
    """Wortsman et al.'s greedy soup of ``candidates`` (name -> decoder weights); ``score(weights,
    label)`` returns validation scores holding ``metric``. With ``uniform``, the mean of all the
    candidates is scored too (reported, never chosen)."""
    if len(candidates) < 2:
        raise ValueError("a soup needs at least two runs")
    alone = {name: score(weights, name) for name, weights in candidates.items()}
    uniform_scores = None
    if uniform and len(candidates) > 2:
        uniform_scores = score(mean_weights(list(candidates.values())), f"uniform soup of {len(candidates)}")
    order = sorted(candidates, key=lambda name: alone[name][metric], reverse=True)
    kept, best = [order[0]], alone[order[0]]
    steps = []
    for name in order[1:]:
        trial = score(mean_weights([candidates[n] for n in [*kept, name]]), f"greedy: {len(kept)} kept + {name}")
        gains = trial[metric] > best[metric]
        steps.append(SoupStep(name, list(kept), trial, gains))
        if gains:
            kept, best = [*kept, name], trial
    return SoupResult(metric, alone, uniform_scores, steps, kept, best, mean_weights([candidates[n] for n in kept]))


def soup_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
    uniform: bool = True,
    report: Callable[[str], None] = lambda line: None,
) -> SoupResult:
    """The greedy soup of ``run_dirs``' best decoders, validated as the first run validates; with
    ``out``, written there as a run directory (the first run's config, vocabulary and encoder, the
    soup's decoder, its validation scores and ingredients in ``metrics.json``)."""
    if len(run_dirs) < 2:
        raise CheckpointError("a soup needs at least two run directories")
    runs = [checkpoint.load_run(path) for path in run_dirs]
    base = runs[0]
    # The first run's encoder; a run directory without one (an export) takes it from its pretrained source.
    has_encoder = checkpoint.has_encoder_weights(base.weights)
    model = build_model(base.config, base.vocabulary, pretrained_encoder=not has_encoder)
    if has_encoder:
        checkpoint.load_state_strict(model, base.weights, base.run_dir / checkpoint.WEIGHTS_FILE)
    shapes = {name: tuple(t.shape) for name, t in model.decoder.state_dict().items()}
    candidates: dict[str, Weights] = {}
    for run in runs:
        source = run.run_dir / checkpoint.WEIGHTS_FILE
        if run.vocabulary != base.vocabulary:
            raise CheckpointError(
                f"{run.run_dir / checkpoint.VOCAB_FILE} differs from {base.run_dir}'s vocabulary: "
                "soup only runs fine-tuned from the same starting run"
            )
        weights = checkpoint.decoder_weights(run.weights)
        if {name: tuple(t.shape) for name, t in weights.items()} != shapes:
            raise CheckpointError(
                f"{source}: the decoder's tensors differ from {base.run_dir}'s in name or shape; "
                "soup only runs of the same decoder (same config, same starting run)"
            )
        name = str(run.run_dir)
        if name in candidates:
            raise CheckpointError(f"{run.run_dir} is named twice; each run is one ingredient")
        candidates[name] = {k: v.float() for k, v in weights.items()}

    device = torch.device(device)
    model.to(device)
    data = prepare_data(base.config, model.encoder.preprocess, base.vocabulary)
    settings = run_decode_settings(base.config)
    metric = base.config.eval.metric

    def score(weights: Weights, label: str) -> dict[str, float]:
        model.decoder.load_state_dict(weights)
        predictions = caption_records(model, data.val_records, data.val_input, data.input_kind, base.vocabulary,
                                      settings, device, batch_size=base.config.eval.batch_size, progress=False)
        corpus = {k: v for k, v in score_predictions(predictions, meteor=False).corpus.items() if v is not None}
        report(f"{label}: {metric} {corpus[metric]:.4f}, BLEU-4 {corpus['BLEU-4']:.4f}")
        return corpus

    result = greedy_soup(candidates, score, metric, uniform)
    result.images, result.decoding = len(data.val_records), dict(settings.__dict__)
    if out is not None:
        model.decoder.load_state_dict(result.weights)
        checkpoint.save_run(Path(out), base.config, base.vocabulary, model.cpu(), {
            "split": base.config.data.val_split, "images": result.images, "soup_of": result.ingredients,
            "decoding": result.decoding, **result.metrics,
        })
    return result
