"""Caption metrics that score exactly as the COCO caption evaluation (pycocoevalcap 1.2).

``score_captions(references, candidates)`` tokenizes like pycocoevalcap's PTBTokenizer (in pure
Python, :mod:`captioner.tokenization`) and returns BLEU-1..4, METEOR, ROUGE-L and CIDEr (which
is CIDEr-D, as in pycocoevalcap's ``eval.py``) equal to pycocoevalcap's to 1e-6, corpus and per
image, many times faster. Only METEOR needs Java: it runs the jar shipped with pycocoevalcap
when both are installed and is reported as unavailable (``None``, "n/a") otherwise. SPICE is
not provided: it needs Stanford CoreNLP models downloaded at run time.

One module per metric, each with a pycocoevalcap-style scorer whose
``compute_score(gts, res)`` takes already tokenized, space-joined captions
(``{image: [caption, ...]}`` and ``{image: [one caption]}``) and returns
``(corpus_score, per_image_scores)``: ``bleu.Bleu``, ``rouge.Rouge``, ``cider.Cider``,
``meteor.Meteor``; ``tokenizer.tokenize_captions`` is the batch tokenizer.

This package imports nothing of the model side (encoders, models, decoding, training).
"""

from captioner.metrics.score import METRIC_NAMES, CaptionScores, score_captions

__all__ = ["METRIC_NAMES", "CaptionScores", "score_captions"]
