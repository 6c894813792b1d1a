"""Matrix products of a few rows against a fixed weight, fast on a CPU: oneDNN prepacked weights.

A beam search over one photo multiplies 3 rows by each of the decoder's weight matrices at
every word. PyTorch's ``nn.functional.linear`` hands that to a general matrix product that, for
so few rows, runs about 3x slower than reading the weights allows (benchmarks/results/
packed_linear.log). oneDNN reaches that speed when the weight is first reordered into its own
blocked layout, once: the same kernels ``torch.compile`` uses for frozen CPU models, without
compiling anything.

``linear(x, weight, bias)`` is ``nn.functional.linear`` with that fast path for inference on a
CPU: no autograd, float32, oneDNN present, 2 to 64 rows and a weight larger than 512 x 512.
Each weight is packed on first use, checked once against ``nn.functional.linear`` (a build
whose kernels disagree falls back for good), and kept while the weight is unchanged: its
storage and version counter are the key, so an optimiser step, a loaded state dict or a move
to another device packs it again. Results equal the plain product up to float rounding.
``disabled()`` turns the path off, for comparisons.

``linear(..., precision="bf16")`` is an opt-in, less exact variant for CPUs that compute in
bfloat16 natively (AVX512-BF16 or AMX): the fast path then multiplies bfloat16 copies of the
weight and the input (float32 out, the bias added in float32), at any number of rows. Half the
bytes to read, and kernels that do twice the multiply-adds per instruction: one photo's beam
search 1.2-1.5x faster on such a CPU, batched searches ~1.7x (BENCHMARKS.md). Each product is
then exact to about 3 significant digits (bfloat16 keeps 8 bits of mantissa), so a near tie
between two words may go the other way. Where ``bfloat16_supported()`` is False, it changes
nothing.

``linear(..., precision="int8")`` reads a quarter of the bytes: the weight quantised once to
int8 per output channel, each row of the input to 8 bits per call (dynamic quantisation, 7 bits
of range as PyTorch's x86 default, so that CPUs without VNNI cannot saturate; per row, so that a
row's result never depends on the other rows), multiplied by fbgemm's int8 kernels and scaled
back to float32. One photo's beam search with the shipped two-decoder ensemble runs ~2x faster
on the 2-core VM, at the same dev CIDEr-D (0.613 against fp32's 0.611; BENCHMARKS.md). Each output
is off by at most half a quantisation step of each operand, summed over the inputs. The kernels
are PyTorch's ``quantized::linear_dynamic`` (what ``torch.ao.quantization.quantize_dynamic``
runs); making its packed weight still needs a quantised tensor, which PyTorch deprecates, so the
pinned release is what this is tested on, and a build without the kernels (or whose kernels
disagree at the first use) keeps float32. Where ``int8_supported()`` is False, it changes
nothing.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Iterator

import torch
from torch.nn import functional
from torch.utils.weak import WeakIdKeyDictionary

_ROWS_HINT = 3
"""oneDNN picks the packed layout for this many rows; it is right for one photo's beams and
still beats the plain product up to tens of rows."""

_ROWS_RANGE = range(2, 65)
"""Rows for which the packed product is used: for one row the plain product already reads the
weight at full speed, and from ~50 rows on both are bound by arithmetic, where packing gains
little or loses (benchmarks/results/packed_linear.log)."""

_MIN_WEIGHT_VALUES = 1 << 19
"""Smaller weights (up to 512 x 512) stay with the plain product: a packed call has a fixed
cost of tens of microseconds, about what the product itself takes there."""

_BF16_MIN_WEIGHT_VALUES = 1 << 18
"""In bfloat16, a 512 x 512 weight already gains 1.4-2.3x over the plain float32 product from
2 rows on."""

_state = threading.local()
_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""weight -> ((data pointer, version), packed weight); an entry goes when its weight does."""
_packed_bf16: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""The same for the weights' packed bfloat16 copies."""
_packed_int8: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""The same for the weights' int8 copies in fbgemm's layout."""
_kernels_work: bool | None = None
_bf16_kernels_work: bool | None = None
_int8_kernels_work: bool | None = None

PRECISIONS = ("fp32", "bf16", "int8")
"""What ``linear``'s fast path multiplies in."""


def _enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use plain ``nn.functional.linear`` inside this block (in this thread)."""
    previous = _enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


@functools.cache
def _cpu_multiplies_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def bfloat16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where
    ``linear(..., precision="bf16")`` pays; elsewhere oneDNN would emulate it, slower than float32."""
    return _cpu_multiplies_bf16() and _bf16_kernels_work is not False


@functools.cache
def _cpu_has_int8_kernels() -> bool:
    return hasattr(torch.ops.quantized, "linear_dynamic") and any(
        engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm")
    )


def int8_supported() -> bool:
    """Whether this build has fbgemm's int8 kernels (x86 CPUs), where ``linear(...,
    precision="int8")`` pays, and they have not failed their first check."""
    return _cpu_has_int8_kernels() and _int8_kernels_work is not False


def _inference_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _enabled()
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and x.dim() == 2
        and torch.backends.mkldnn.is_available()
    )


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _kernels_work is not False
        and x.size(0) in _ROWS_RANGE
        and weight.numel() >= _MIN_WEIGHT_VALUES
        and _inference_on_cpu(x, weight)
    )


def _applies_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """bfloat16 kernels beat the float32 product at any number of rows for the larger weights,
    and for 512 x 512 from 2 rows: for one row its packed call costs more than the plain
    product (benchmarks/results/packed_linear_bf16.log)."""
    large_enough = weight.numel() >= _MIN_WEIGHT_VALUES or (
        weight.numel() >= _BF16_MIN_WEIGHT_VALUES and x.size(0) > 1
    )
    return large_enough and bfloat16_supported() and _inference_on_cpu(x, weight)


def _applies_int8(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """From 512 x 512 on, at any number of rows: smaller weights stay in float32, where a
    quantised call's fixed cost is most of the product."""
    return (
        weight.numel() >= _BF16_MIN_WEIGHT_VALUES
        and x.size(0) > 0
        and torch.backends.quantized.engine in ("x86", "fbgemm")
        and int8_supported()
        and _inference_on_cpu(x, weight)
    )


def version(tensor: torch.Tensor) -> int:
    """The tensor's version counter (bumped by every in-place change), 0 for a tensor made under
    inference mode, which keeps none: such a tensor (a weight derived there, or a model loaded
    there) cannot be changed in place outside inference mode."""
    return 0 if tensor.is_inference() else tensor._version


def _pack(weight: torch.Tensor, bf16: bool = False) -> torch.Tensor | None:
    """The weight (its bfloat16 copy with ``bf16``) in oneDNN's layout, or None where this
    build cannot (then never again)."""
    global _kernels_work, _bf16_kernels_work
    cache = _packed_bf16 if bf16 else _packed
    kernels_work = _bf16_kernels_work if bf16 else _kernels_work
    key = (weight.data_ptr(), version(weight))
    cached = cache.get(weight)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        source = weight.to(torch.bfloat16) if bf16 else weight
        packed = torch.ops.mkldnn._reorder_linear_weight(source.contiguous(), _ROWS_HINT)
        if kernels_work is None:
            # A private generator: the check must not move the global random stream (dropout,
            # sampling), or a run's results would depend on when it first decoded.
            probe = torch.randn(_ROWS_HINT, weight.size(1), generator=torch.Generator().manual_seed(0))
            expected = functional.linear(probe, weight)
            error = (_product(probe, packed, None, bf16) - expected).abs()
            if bf16:
                # Rounding x, w and the output to 8 bits of mantissa moves each output by at most
                # 3 * 2^-8 of sum |x||w|; a broken kernel is off by far more.
                kernels_work = bool((error <= 2**-6 * functional.linear(probe.abs(), weight.abs())).all())
            else:
                # Rounding differs with the order of the sums; a broken kernel differs by far more.
                kernels_work = float(error.max()) <= 1e-4 * max(float(expected.abs().max()), 1.0)
    except (RuntimeError, AttributeError):
        kernels_work = False
    if bf16:
        _bf16_kernels_work = kernels_work
    else:
        _kernels_work = kernels_work
    if not kernels_work:
        return None
    cache[weight] = (key, packed)
    return packed


def _product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, bf16: bool) -> torch.Tensor:
    if not bf16:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    # The bias stays float32: added after the product, it loses nothing to bfloat16.
    out = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, None, "none", [], "").float()
    return out if bias is None else out.add_(bias)


def _pack_int8(weight: torch.Tensor) -> torch.ScriptObject | None:
    """The weight quantised to int8 per output channel in fbgemm's layout, or None where this
    build cannot (then never again)."""
    global _int8_kernels_work
    key = (weight.data_ptr(), version(weight))
    cached = _packed_int8.get(weight)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        zero_points = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():
            # Deprecated quantised tensors are the only way into these kernels (module docstring).
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight.detach().contiguous(), scales, zero_points, 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(quantized, None)
        if _int8_kernels_work is None:
            probe = torch.randn(_ROWS_HINT, weight.size(1), generator=torch.Generator().manual_seed(0))
            error = (_product_int8(probe, packed, None) - functional.linear(probe, weight)).abs()
            # Half a step of each operand, per input, is the most rounding can move an output;
            # twice that leaves room for the cross terms. A broken kernel is off by far more.
            input_step = 2 * probe.abs().amax(dim=1, keepdim=True) / 127  # each row's range over 7 bits
            bound = scales.float() * probe.abs().sum(dim=1, keepdim=True) + input_step * weight.abs().sum(dim=1)
            _int8_kernels_work = bool((error <= bound).all())
    except (RuntimeError, AttributeError):
        _int8_kernels_work = False
    if not _int8_kernels_work:
        return None
    _packed_int8[weight] = (key, packed)
    return packed


def _product_int8(
    x: torch.Tensor, packed: torch.ScriptObject, bias: torch.Tensor | None, input_bound: float | None = None
) -> torch.Tensor:
    # The kernel quantises its whole input with one range, from the input's smallest and largest
    # values. A row holding -1 and 1 appended to rows each scaled to a largest |value| of 1 (or
    # -bound and bound, for inputs known to lie within them) makes that range the same for every
    # call: a row's quantisation, and so its output, never depend on the other rows of the call
    # (another photo of a batch, another request of the server's micro-batch). Both ways make a
    # new contiguous input, so ``x`` may be any (N, in) view.
    if input_bound is None:
        # abs().amax(): ~9x faster here than vector_norm(ord=inf) for a photo's 49 regions.
        row_scale = x.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(x.dtype).tiny)
        x = x / row_scale
    rows = torch.cat([x, _range_row(x.size(1), input_bound or 1.0, x.device)])
    out = torch.ops.quantized.linear_dynamic(rows, packed, True)[:-1]
    if input_bound is None:
        return out.mul_(row_scale) if bias is None else torch.addcmul(bias, out, row_scale)
    return out if bias is None else out.add_(bias)


@functools.cache
def _range_row(columns: int, bound: float, device: torch.device) -> torch.Tensor:
    row = torch.zeros(1, columns, device=device)
    row[0, 0], row[0, -1] = -bound, bound
    return row


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    precision: str = "fp32",
    input_bound: float | None = None,
) -> torch.Tensor:
    """``nn.functional.linear(x, weight, bias)`` for (N, in) ``x``, through a packed weight
    where that applies, in bfloat16 or int8 with that ``precision`` where the CPU supports it
    (see the module docstring); otherwise in float32. ``input_bound``: every |x| is at most this
    (an LSTM's hidden state: 1), which int8 then quantises on that fixed range instead of
    scaling each row first (fewer operations; a value outside it widens the range of that call,
    so that its rows depend on each other again, and costs nothing else)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and _applies_int8(x, weight):
        packed = _pack_int8(weight)
        if packed is not None:
            return _product_int8(x, packed, bias, input_bound)
    for bf16 in (True, False) if precision == "bf16" else (False,):
        if (_applies_bf16 if bf16 else _applies)(x, weight):
            packed = _pack(weight, bf16)
            if packed is not None:
                return _product(x.contiguous(), packed, bias, bf16)
    return functional.linear(x, weight, bias)


class PreparedLinear:
    """``linear(x, weight, bias, precision, input_bound)`` with the decisions that depend only on
    the weight made once: for a search that multiplies the same weight a few rows at a time at
    every step, where looking the packed weight up again each time costs about a third of an
    int8 product. Valid while the weight is unchanged (one search); ``linear`` re-checks."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, precision: str = "fp32", input_bound: float | None = None
    ) -> None:
        self.weight, self.bias, self.precision, self.input_bound = weight, bias, precision, input_bound
        probe = torch.empty(_ROWS_HINT, weight.size(1), dtype=weight.dtype, device=weight.device)
        self._int8 = _pack_int8(weight) if precision == "int8" and _applies_int8(probe, weight) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._int8 is not None and x.size(0) > 0:
            return _product_int8(x, self._int8, self.bias, self.input_bound)
        return linear(x, self.weight, self.bias, self.precision, self.input_bound)
