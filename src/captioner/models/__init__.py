"""The captioning network: soft attention and the Show, Attend and Tell LSTM decoder.

Owns: ``attention`` (additive attention over image regions), ``decoder`` (the LSTM that writes
one word at a time, its config, teacher-forced forward and single-step interface),
``captioning`` (an encoder and a decoder together) and ``packed_linear`` (the CPU inference path
for the decoder's matrix products of a few rows). Must not know about: files, datasets,
tokenization, search strategies (``decoding``) or metrics.
"""
