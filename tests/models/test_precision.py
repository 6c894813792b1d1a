"""Captioning in bfloat16 or int8 (``precision="bf16"`` / ``"int8"``): used only where the
hardware has the kernels, reported where it falls back, close to float32 where it runs, and the
model's own (``eval.precision``) unless the caller asks for another."""

from __future__ import annotations

import json
import shutil
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
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        Captioner.from_pretrained(tiny_run, device="cpu", precision="fp16")


def test_without_native_bfloat16_the_model_stays_float32(tiny_run, no_native_bf16):
    captioner = Captioner.from_pretrained(tiny_run, device="cpu", precision="bf16")
    assert captioner.precision == "fp32"
    assert captioner.model.decoder.product_precision == "fp32"


def test_the_command_says_in_one_line_when_it_falls_back(tiny_run, tiny_scenes, no_native_bf16, capsys):
    image = next((tiny_scenes / "images").rglob("*.png"))
    assert main(["caption", str(image), "--checkpoint", str(tiny_run), "--precision", "bf16"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "precision" in line]
    assert err == ["captioner: --precision bf16 needs native bfloat16 (a CPU with AVX512-BF16 or AMX, "
                   "or a GPU that has it); cpu has none, running in fp32"]


@needs_native_bf16
def test_bf16_runs_the_cnn_and_the_decoders_products_in_bfloat16():
    torch.set_num_threads(2)
    fp32 = Captioner.from_pretrained(device="cpu", precision="fp32")
    bf16 = Captioner.from_pretrained(device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.model.decoder.product_precision == "bf16"
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


needs_int8_kernels = pytest.mark.skipif(
    not packed_linear.int8_supported(),
    reason="this PyTorch build has no fbgemm int8 kernels (x86 only): int8 falls back to fp32 here",
)


@pytest.fixture
def no_int8_kernels(monkeypatch):
    monkeypatch.setattr(packed_linear, "_cpu_has_int8_kernels", lambda: False)


@needs_int8_kernels
def test_the_shipped_default_captions_in_int8_and_fp32_stays_exact_on_request():
    shipped = Captioner.from_pretrained(device="cpu")
    assert shipped.config.eval.precision == "int8"
    assert (shipped.precision, shipped.model.decoder.product_precision) == ("int8", "int8")
    exact = Captioner.from_pretrained(device="cpu", precision="fp32")
    assert (exact.precision, exact.model.decoder.product_precision) == ("fp32", "fp32")
    pixels = exact.model.encoder.preprocess(load_rgb_image(DOG))
    with torch.inference_mode():
        # int8 leaves the CNN in float32: the same features, bit for bit.
        assert torch.equal(shipped.model.encode(pixels[None]), exact.model.encode(pixels[None]))
    (result,) = shipped.caption(DOG)
    assert "dog" in result.words, result.caption
    assert result.attention.shape == (len(result.words), 7, 7)


@needs_int8_kernels
def test_an_int8_caption_does_not_depend_on_the_other_photos_of_its_batch():
    """The server micro-batches requests: a photo must get the same caption, score and attention
    alone as beside others, in a small batch or a large one (more than
    ``CONTEXT_TERMS_MAX_IMAGES``, which in fp32 decodes another way)."""
    shipped = Captioner.from_pretrained(device="cpu")
    photos = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
    (alone,) = shipped.caption(DOG, guidance=False)
    for batch in (photos[:4], photos + photos[:2]):  # 4 photos and 10
        beside = [r for r in shipped.caption(batch, guidance=False) if r.source == str(DOG)][0]
        assert (beside.caption, beside.score) == (alone.caption, alone.score), len(batch)
        assert torch.equal(torch.as_tensor(beside.attention), torch.as_tensor(alone.attention))


def test_a_run_captions_in_its_own_precision_unless_asked(tiny_run, tmp_path):
    assert Captioner.from_pretrained(tiny_run, device="cpu").precision == "fp32"  # the config's default
    run = shutil.copytree(tiny_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["eval"]["precision"] = "int8"
    (run / "config.json").write_text(json.dumps(config))
    expected = "int8" if packed_linear.int8_supported() else "fp32"
    assert Captioner.from_pretrained(run, device="cpu").precision == expected
    assert Captioner.from_pretrained(run, device="cpu", precision="fp32").precision == "fp32"


def test_without_int8_kernels_the_model_stays_float32(tiny_run, tiny_scenes, no_int8_kernels, capsys):
    captioner = Captioner.from_pretrained(tiny_run, device="cpu", precision="int8")
    assert (captioner.precision, captioner.model.decoder.product_precision) == ("fp32", "fp32")
    image = next((tiny_scenes / "images").rglob("*.png"))
    assert main(["caption", str(image), "--checkpoint", str(tiny_run), "--precision", "int8"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "precision" in line]
    assert err == ["captioner: --precision int8 needs fbgemm's int8 kernels (PyTorch on an x86 CPU); "
                   "cpu has none, running in fp32"]
    # The model's own int8 falls back without a word: the user asked for nothing.
    assert main(["caption", str(DOG), "--no-guidance"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if "precision" in line]


def test_an_unknown_precision_in_a_config_is_refused():
    from captioner.errors import ConfigError
    from captioner.training.config import EvalConfig

    with pytest.raises(ConfigError, match="eval.precision must be one of fp32, bf16, int8, got 'fp16'"):
        EvalConfig(precision="fp16")
