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
"""

from __future__ import annotations

import contextlib
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

_state = threading.local()
_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""weight -> ((data pointer, version), packed weight); an entry goes when its weight does."""
_kernels_work: bool | None = None


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


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _enabled()
        and _kernels_work is not False
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and x.dim() == 2
        and x.size(0) in _ROWS_RANGE
        and weight.numel() >= _MIN_WEIGHT_VALUES
        and torch.backends.mkldnn.is_available()
    )


def version(tensor: torch.Tensor) -> int:
    """The tensor's version counter (bumped by every in-place change), 0 for a tensor made under
    inference mode, which keeps none: such a tensor (a weight derived there, or a model loaded
    there) cannot be changed in place outside inference mode."""
    return 0 if tensor.is_inference() else tensor._version


def _pack(weight: torch.Tensor) -> torch.Tensor | None:
    """The weight in oneDNN's layout, or None where this build cannot (then never again)."""
    global _kernels_work
    key = (weight.data_ptr(), version(weight))
    cached = _packed.get(weight)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _ROWS_HINT)
        if _kernels_work is None:
            # A private generator: the check must not move the global random stream (dropout,
            # sampling), or a run's results would depend on when it first decoded.
            probe = torch.randn(_ROWS_HINT, weight.size(1), generator=torch.Generator().manual_seed(0))
            expected = functional.linear(probe, weight)
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
            # Rounding differs with the order of the sums; a broken kernel differs by far more.
            error = float((got - expected).abs().max())
            _kernels_work = error <= 1e-4 * max(float(expected.abs().max()), 1.0)
    except (RuntimeError, AttributeError):
        _kernels_work = False
    if not _kernels_work:
        return None
    _packed[weight] = (key, packed)
    return packed


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.functional.linear(x, weight, bias)`` for (N, in) ``x``, through a packed weight
    where that applies (see the module docstring)."""
    if not _applies(x, weight):
        return functional.linear(x, weight, bias)
    packed = _pack(weight)
    if packed is None:
        return functional.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")
