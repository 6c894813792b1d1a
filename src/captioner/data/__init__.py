"""Everything between files on disk and batches of tensors.

Owns: the caption record (``records``), readers for the dataset formats users have
(``readers/``), caption text and vocabulary (``text``), image loading (``images``), the built-in
``scenes`` dataset and its grounded checker (``scenes/``), and batching (``batches``).
Must not know about: encoders, models, decoding or metrics; an image transform or a feature
lookup is passed in as a plain callable.
"""
