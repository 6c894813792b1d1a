"""Fitting a captioner: the run's config, the training loop, checkpoints.

Owns: ``config`` (one typed dataclass per run, saved as JSON beside every checkpoint),
``checkpoint`` (run directories: safetensors weights, JSON config/vocabulary/metrics/state,
written atomically; never pickle), ``loop`` (teacher-forced training with validation by CIDEr-D)
and ``evaluation`` (caption a split and score it). It drives data -> encoder -> decoder -> loss
and calls metrics; nothing upstream imports it.
"""
