"""Captioning in bfloat16 (``precision="bf16"``): used only where the hardware computes it
natively, reported where it falls back, and close to float32 where it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioner.api import Captioner
from captioner.cli import main
from captioner.data.images import load_rgb_image
from captioner.models import packed_linear

ROOT = Path(__file__).resolve().parents[2]
DOG = ROOT / "examples" / "photos" / "dog_german_shepherd.jpg"
needs_native_bf16 = pytest.mark.skipif(
    not packed_linear.bfloat16_supported(),
    reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 falls back to fp32 here",
)


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(packed_linear, "_cpu_multiplies_bf16", lambda: False)


def test_an_unknown_precision_is_refused(tiny_run):
    with pytest.raises(ValueError, match="fp32, bf16"):
        Captioner.from_pretrained(tiny_run, device="cpu", precision="fp16")


def test_without_native_bfloat16_the_model_stays_float32(tiny_run, no_native_bf16):
    captioner = Captioner.from_pretrained(tiny_run, device="cpu", precision="bf16")
    assert captioner.precision == "fp32"
    assert not captioner.model.decoder.bfloat16_products


def test_the_command_says_in_one_line_when_it_falls_back(tiny_run, tiny_scenes, no_native_bf16, capsys):
    image = next((tiny_scenes / "images").rglob("*.png"))
    assert main(["caption", str(image), "--checkpoint", str(tiny_run), "--precision", "bf16"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "precision" in line]
    assert err == ["captioner: --precision bf16 needs native bfloat16 (a CPU with AVX512-BF16 or AMX, "
                   "or a GPU that has it); cpu has none, running in fp32"]


@needs_native_bf16
def test_bf16_runs_the_cnn_and_the_decoders_products_in_bfloat16():
    torch.set_num_threads(2)
    fp32 = Captioner.from_pretrained(device="cpu")
    bf16 = Captioner.from_pretrained(device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.model.decoder.bfloat16_products
    pixels = fp32.model.encoder.preprocess(load_rgb_image(DOG))
    with torch.inference_mode():
        exact, rounded = fp32.model.encode(pixels[None]), bf16.model.encode(pixels[None])
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    # The CNN's features under bfloat16 autocast: a few percent off on average, not more.
    assert float((rounded - exact).abs().mean() / exact.abs().mean()) < 0.1
    (result,) = bf16.caption(DOG)
    assert "dog" in result.words, result.caption
    assert result.attention.shape == (len(result.words), 7, 7)


@needs_native_bf16
def test_caption_command_takes_precision(capsys):
    assert main(["caption", str(DOG), "--json", "--precision", "bf16"]) == 0
    out = capsys.readouterr()
    (result,) = json.loads(out.out)
    assert "dog" in result["words"] and "precision" not in out.err
