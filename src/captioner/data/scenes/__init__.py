"""The built-in ``scenes`` dataset: coloured shapes on a grid, with captions that can be checked.

Owns: the world and its ground truth (``truth``), the true-caption writer (``captions``), the
builder of the COCO-format folder (``generator``) and the grounded-precision checker
(``checker``). Must not know about tensors, encoders, models or metrics.
"""

from captioner.data.scenes.checker import GroundingResult, corpus_grounded_precision, grounded_precision
from captioner.data.scenes.generator import DEFAULT_SIZES, SPLITS, build_scenes, held_out_pairs
from captioner.data.scenes.truth import SceneObject, SceneTruth, find_scene_truths, load_scene_truths

__all__ = [
    "DEFAULT_SIZES",
    "SPLITS",
    "GroundingResult",
    "SceneObject",
    "SceneTruth",
    "build_scenes",
    "corpus_grounded_precision",
    "find_scene_truths",
    "grounded_precision",
    "held_out_pairs",
    "load_scene_truths",
]
