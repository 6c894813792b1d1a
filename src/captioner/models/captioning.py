"""An encoder and a decoder together: image pixels in, next-word scores out.

Training on cached features uses the decoder alone; captioning from pixels, training a
from-scratch encoder, or fine-tuning encoder blocks uses this pair.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.base import Encoder
from captioner.models import packed_linear
from captioner.models.decoder import ShowAttendTellDecoder, TeacherForcedOutput

CPU_INFERENCE_CHUNK = 2
"""At inference on a CPU the CNN takes a batch this many photos at a time: larger batches spill
its activations out of the caches. On the 2-core VM (benchmarks/cnn_batch_chunks.py, 64 photos,
chunks of 1 / 2 / 4 / 8 / 16 / 64): the shipped ensemble's two CNNs 35.8 / 28.1 / 34.0 / 46.4 /
43.0 / 52.5 ms a photo, EfficientNet-Lite0 16.9 / 11.9 / 12.5 / 12.9 / 18.3 / 21.2 ms. Chunks
leave the features unchanged (eval-mode BatchNorm); training keeps whole batches."""

PRECISIONS = packed_linear.PRECISIONS
"""Inference precisions: ``bf16`` runs the CNN under bfloat16 autocast and, on a CPU, the
decoder's large products in bfloat16, where the hardware computes bfloat16 natively; ``int8``
keeps the CNN in float32 and runs the decoder's large products on a CPU with int8 weights and
inputs (``packed_linear``), where the build has fbgemm's kernels (x86)."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU that has it, or a CPU with AVX512-BF16
    or AMX. Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and packed_linear.bfloat16_supported()


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
        self.precision = "fp32"
        self.mirror_weight = 0.0

    def use_channels_last(self) -> CaptioningModel:
        """Run the CNN in channels-last layout: faster for inference with oneDNN and cuDNN."""
        self.encoder.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def use_precision(self, precision: str, device: torch.device) -> str:
        """Caption in ``precision`` (one of ``PRECISIONS``) on ``device`` where it has the kernels
        for it, else in fp32; returns the precision used. bfloat16 keeps about 3 significant
        digits, int8 about 2 in each product: captions may differ from fp32's where two words
        nearly tie (BENCHMARKS.md measures what that does to dev scores)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16" and not native_bfloat16(device):
            precision = "fp32"
        if precision == "int8" and not (device.type == "cpu" and packed_linear.int8_supported()):
            precision = "fp32"
        self.precision = precision
        # The packed products are a CPU path; on a GPU the decoder stays float32.
        self.decoder.product_precision = precision if device.type == "cpu" else "fp32"
        return precision

    def use_mirror_average(self, weight: float) -> CaptioningModel:
        """At inference, also encode each photo flipped left to right and mix that grid, flipped
        back so that each cell covers the same part of the photo, into the photo's own:
        (1 - weight) x plain + weight x mirrored. Costs a second CNN forward per photo; 0 turns it
        off. Training never mirrors here (it has ``data.mirror_feature_cache``)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"mirror weight must be between 0 and 1, got {weight}")
        self.mirror_weight = weight
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, R, D) region features (float32 under the
        ``bf16`` precision), averaged with their mirror images' where ``use_mirror_average`` asks."""
        if self.mirror_weight and not self.training:
            count = images.size(0)
            plain, mirrored = self._encode(torch.cat([images, images.flip(-1)])).split(count)
            rows, columns = self.encoder.grid_size(images.size(-1))
            mirrored = mirrored.reshape(count, rows, columns, -1).flip(2).reshape(plain.shape)
            return torch.lerp(plain, mirrored, self.mirror_weight)
        return self._encode(images)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type == "cpu" and not self.training and images.size(0) > CPU_INFERENCE_CHUNK:
            return torch.cat([self._encode(chunk) for chunk in images.split(CPU_INFERENCE_CHUNK)])
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.precision != "bf16":
            return self.encoder(images)
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            return self.encoder(images).float()

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> TeacherForcedOutput:
        return self.decoder(self.encode(images), captions)
