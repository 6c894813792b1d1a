"""An encoder and a decoder together: image pixels in, next-word scores out.

Training on cached features uses the decoder alone; captioning from pixels, training a
from-scratch encoder, or fine-tuning encoder blocks uses this pair.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.base import Encoder
from captioner.models.decoder import ShowAttendTellDecoder, TeacherForcedOutput


class CaptioningModel(nn.Module):
    def __init__(self, encoder: Encoder, decoder: ShowAttendTellDecoder) -> None:
        super().__init__()
        if encoder.feature_dim != decoder.feature_dim:
            raise ValueError(
                f"encoder gives {encoder.feature_dim}-d regions but decoder expects {decoder.feature_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.channels_last = False

    def use_channels_last(self) -> CaptioningModel:
        """Run the CNN in channels-last layout: faster for inference with oneDNN and cuDNN."""
        self.encoder.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, R, D) region features."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.encoder(images)

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> TeacherForcedOutput:
        return self.decoder(self.encode(images), captions)
