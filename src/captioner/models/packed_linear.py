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

``linear(..., bfloat16=True)`` is an opt-in, less exact variant for CPUs that compute in
bfloat16 natively (AVX512-BF16 or AMX): the fast path then multiplies bfloat16 copies of the
weight and the input (float32 out, the bias added in float32), at any number of rows. Half the
bytes to read, and kernels that do twice the multiply-adds per instruction: one photo's beam
search 1.2-1.5x faster on such a CPU, batched searches ~1.7x (BENCHMARKS.md). Each product is
then exact to about 3 significant digits (bfloat16 keeps 8 bits of mantissa), so a near tie
between two words may go the other way. Where ``bfloat16_supported()`` is False, the flag
changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import threading
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
_kernels_work: bool | None = None
_bf16_kernels_work: bool | None = None


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
    ``linear(..., bfloat16=True)`` pays; elsewhere oneDNN would emulate it, slower than float32."""
    return _cpu_multiplies_bf16() and _bf16_kernels_work is not False


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


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, bfloat16: bool = False
) -> torch.Tensor:
    """``nn.functional.linear(x, weight, bias)`` for (N, in) ``x``, through a packed weight
    where that applies, in bfloat16 with ``bfloat16`` where the CPU supports it natively (see
    the module docstring)."""
    for bf16 in (True, False) if bfloat16 else (False,):
        if (_applies_bf16 if bf16 else _applies)(x, weight):
            packed = _pack(weight, bf16)
            if packed is not None:
                return _product(x.contiguous(), packed, bias, bf16)
    return functional.linear(x, weight, bias)
