"""The CPU fast path for small matrix products must be nn.functional.linear, only faster."""

import pytest
import torch
from torch.nn import functional

from captioner.models import packed_linear

needs_native_bf16 = pytest.mark.skipif(
    not packed_linear.bfloat16_supported(),
    reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX): the bfloat16 path never runs here",
)


def _weight(rows: int = 1024, columns: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, columns, generator=generator) / columns**0.5  # outputs of size ~1
    return weight, torch.randn(rows, generator=generator)


@pytest.mark.parametrize("rows", [1, 3, 7, 64])
def test_equals_functional_linear_for_any_number_of_rows(rows):
    weight, bias = _weight()
    x = torch.randn(rows, 512)
    with torch.inference_mode():
        torch.testing.assert_close(packed_linear.linear(x, weight, bias), functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed_linear.linear(x, weight), functional.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_packs_only_where_it_applies():
    weight, bias = _weight()
    x = torch.randn(3, 512, requires_grad=True)
    out = packed_linear.linear(x, weight, bias)  # autograd on: the plain product, differentiable
    out.sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(dim=0).expand(3, -1))  # the plain product's gradient
    assert weight not in packed_linear._packed
    with torch.inference_mode(), packed_linear.disabled():
        packed_linear.linear(x.detach(), weight, bias)
    assert weight not in packed_linear._packed
    with torch.inference_mode():
        packed_linear.linear(x.detach().double(), weight.double(), bias.double())
        packed_linear.linear(x.detach()[:1], weight, bias)  # one row: plain is as fast
        packed_linear.linear(torch.randn(65, 512), weight, bias)  # many: bound by arithmetic
        small = torch.randn(8, 24)
        packed_linear.linear(torch.randn(3, 24), small)  # small weight: plain is as fast
    assert weight not in packed_linear._packed and small not in packed_linear._packed
    with torch.inference_mode():
        packed_linear.linear(x.detach(), weight, bias)
    if torch.backends.mkldnn.is_available():
        assert weight in packed_linear._packed


def test_an_in_place_update_repacks_the_weight():
    weight, bias = _weight()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        packed_linear.linear(x, weight, bias)
    with torch.no_grad():
        weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(packed_linear.linear(x, weight, bias), functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_a_packed_weight_goes_with_its_weight():
    weight, bias = _weight()
    with torch.inference_mode():
        packed_linear.linear(torch.randn(3, 512), weight, bias)
    entries = len(packed_linear._packed)
    del weight
    assert len(packed_linear._packed) == entries - 1 or not torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=needs_native_bf16)], ids=["float32", "bfloat16"])
def test_kernels_that_disagree_are_never_used(monkeypatch, bf16):
    """The packed product is checked once against the plain one; a build whose oneDNN kernels
    (float32 or bfloat16) give other numbers falls back to float32 products for good."""
    real = torch.ops.mkldnn._linear_pointwise
    broken_dtype = torch.bfloat16 if bf16 else torch.float32

    def off_by_one(x, *args):
        out = real(x, *args)
        return out + 1.0 if x.dtype == broken_dtype else out

    works, cache = ("_bf16_kernels_work", "_packed_bf16") if bf16 else ("_kernels_work", "_packed")
    monkeypatch.setattr(packed_linear, works, None)
    monkeypatch.setattr(packed_linear, cache, packed_linear.WeakIdKeyDictionary())
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", off_by_one)
    weight, bias = _weight()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        got = packed_linear.linear(x, weight, bias, precision="bf16" if bf16 else "fp32")
    torch.testing.assert_close(got, functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert getattr(packed_linear, works) is False
    assert weight not in getattr(packed_linear, cache)
    assert not (bf16 and packed_linear.bfloat16_supported())


def test_the_first_use_check_leaves_the_global_random_stream_alone(monkeypatch):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this build: nothing is checked")
    monkeypatch.setattr(packed_linear, "_kernels_work", None)
    monkeypatch.setattr(packed_linear, "_packed", packed_linear.WeakIdKeyDictionary())
    weight, bias = _weight()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.inference_mode():
        packed_linear.linear(torch.ones(3, 512), weight, bias)
    torch.testing.assert_close(torch.rand(3), expected)


@needs_native_bf16
@pytest.mark.parametrize("rows", [1, 3, 300])
def test_bfloat16_products_are_float32_products_to_about_three_digits(rows):
    weight, bias = _weight()
    x = torch.randn(rows, 512)
    with torch.inference_mode():
        expected = functional.linear(x, weight, bias)
        got = packed_linear.linear(x, weight, bias, precision="bf16")
    assert got.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: inputs rounded by up to 2^-9 each (~0.2%).
    torch.testing.assert_close(got, expected, rtol=0, atol=0.02 * float(expected.abs().max()))
    assert not torch.equal(got, expected)  # it did run in bfloat16
    assert weight in packed_linear._packed_bf16


def test_bfloat16_is_not_used_unless_asked_or_supported(monkeypatch):
    weight, bias = _weight()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        packed_linear.linear(x, weight, bias)
    assert weight not in packed_linear._packed_bf16
    monkeypatch.setattr(packed_linear, "_cpu_multiplies_bf16", lambda: False)
    assert not packed_linear.bfloat16_supported()
    with torch.inference_mode():
        got = packed_linear.linear(x, weight, bias, precision="bf16")
    torch.testing.assert_close(got, functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert weight not in packed_linear._packed_bf16


@needs_native_bf16
def test_bfloat16_skips_one_row_against_a_512_by_512_weight():
    """There the packed call costs more than the plain product (packed_linear_bf16.log)."""
    weight, bias = _weight(512, 512)
    with torch.inference_mode():
        packed_linear.linear(torch.randn(1, 512), weight, bias, precision="bf16")
        assert weight not in packed_linear._packed_bf16
        packed_linear.linear(torch.randn(3, 512), weight, bias, precision="bf16")
    assert weight in packed_linear._packed_bf16


needs_int8_kernels = pytest.mark.skipif(
    not packed_linear.int8_supported(),
    reason="this PyTorch build has no fbgemm int8 kernels (x86 only): the int8 path never runs here",
)


def _int8_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Half a quantisation step of each operand, summed over the inputs, doubled: the weight's
    step per output row (its largest |value| / 127), the input's per row (its range, twice its
    largest |value|, over 7 bits)."""
    weight_step = weight.abs().amax(dim=1) / 127
    input_step = 2 * x.abs().amax(dim=1, keepdim=True) / 127
    return weight_step * x.abs().sum(dim=1, keepdim=True) + input_step * weight.abs().sum(dim=1)


@needs_int8_kernels
@pytest.mark.parametrize("rows", [1, 3, 49, 300])
def test_int8_products_are_float32_products_to_within_a_quantisation_step(rows):
    weight, bias = _weight()
    x = torch.randn(rows, 512)
    with torch.inference_mode():
        expected = functional.linear(x, weight, bias)
        got = packed_linear.linear(x, weight, bias, precision="int8")
    assert got.dtype == torch.float32 and got.shape == expected.shape
    error = (got - expected).abs()
    assert (error <= _int8_bound(x, weight)).all()
    assert float(error.mean()) < 0.02 * float(expected.abs().mean())  # typical error: about 1%
    assert not torch.equal(got, expected)  # it did run in int8
    assert weight in packed_linear._packed_int8


@needs_int8_kernels
def test_an_int8_row_does_not_depend_on_the_other_rows_of_its_call():
    """A photo's caption must not change with the batch it is in (the server batches requests)."""
    weight, bias = _weight()
    x = torch.randn(5, 512)
    others = torch.cat([x[:2], 40 * torch.randn(3, 512), x[2:], torch.zeros(1, 512)])
    with torch.inference_mode():
        alone = packed_linear.linear(x, weight, bias, precision="int8")
        batched = packed_linear.linear(others, weight, bias, precision="int8")
        one_by_one = torch.cat([packed_linear.linear(row[None], weight, bias, precision="int8") for row in x])
    assert torch.equal(batched[[0, 1, 5, 6, 7]], alone)
    assert torch.equal(one_by_one, alone)
    torch.testing.assert_close(batched[8], bias)  # a zero row gives the bias alone


@needs_int8_kernels
def test_int8_rows_within_a_known_bound_are_quantised_on_it_independently():
    """An LSTM's hidden state lies in [-1, 1]: quantised on that range, without scaling rows."""
    weight, bias = _weight()
    x = torch.rand(4, 512) * 1.6 - 0.8  # within [-1, 1], not touching either end
    with torch.inference_mode():
        alone = packed_linear.linear(x, weight, bias, precision="int8", input_bound=1.0)
        batched = packed_linear.linear(torch.cat([x, torch.tanh(9 * torch.randn(3, 512))]), weight, bias,
                                       precision="int8", input_bound=1.0)
        expected = functional.linear(x, weight, bias)
    assert torch.equal(batched[:4], alone)
    input_step = 2.0 / 127  # the range [-1, 1] over 7 bits
    bound = weight.abs().amax(dim=1) / 127 * x.abs().sum(dim=1, keepdim=True) + input_step * weight.abs().sum(dim=1)
    assert ((alone - expected).abs() <= bound).all()


@needs_int8_kernels
def test_int8_keeps_small_weights_and_autograd_in_float32():
    weight, bias = _weight(512, 256)  # below 512 x 512: the quantised call's fixed cost dominates
    x = torch.randn(3, 256)
    with torch.inference_mode():
        got = packed_linear.linear(x, weight, bias, precision="int8")
    torch.testing.assert_close(got, functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert weight not in packed_linear._packed_int8
    large, large_bias = _weight()
    rows = torch.randn(3, 512, requires_grad=True)
    packed_linear.linear(rows, large, large_bias, precision="int8").sum().backward()
    torch.testing.assert_close(rows.grad, large.sum(dim=0).expand(3, -1))
    assert large not in packed_linear._packed_int8


@needs_int8_kernels
def test_an_in_place_update_requantises_the_int8_weight():
    weight, bias = _weight()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        before = packed_linear.linear(x, weight, bias, precision="int8")
    with torch.no_grad():
        weight.mul_(-2.0)
    with torch.inference_mode():
        after = packed_linear.linear(x, weight, bias, precision="int8")
        expected = functional.linear(x, weight, bias)
    assert ((after - expected).abs() <= _int8_bound(x, weight)).all()
    assert not torch.allclose(before, after)


def test_int8_kernels_that_disagree_are_never_used(monkeypatch):
    """The int8 product is checked once against the float32 one; a build whose kernels give
    other numbers (here: everything doubled) keeps float32 products for good."""
    if not packed_linear._cpu_has_int8_kernels():
        pytest.skip("no fbgemm int8 kernels in this build: nothing is checked")
    real = packed_linear._product_int8
    monkeypatch.setattr(packed_linear, "_product_int8", lambda *args: 2 * real(*args))
    monkeypatch.setattr(packed_linear, "_int8_kernels_work", None)
    monkeypatch.setattr(packed_linear, "_packed_int8", packed_linear.WeakIdKeyDictionary())
    weight, bias = _weight()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        got = packed_linear.linear(x, weight, bias, precision="int8")
    torch.testing.assert_close(got, functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert not packed_linear.int8_supported() and weight not in packed_linear._packed_int8


def test_an_unknown_precision_is_refused():
    weight, bias = _weight()
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        packed_linear.linear(torch.randn(3, 512), weight, bias, precision="fp16")
