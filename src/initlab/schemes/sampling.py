"""Elementwise distributions: the variance-scaling family, and the truncated-normal sampler."""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ..connectivity import Fans
from ..errors import InitlabError, check_choice

if TYPE_CHECKING:  # numpy is optional: imported where the CPU sampler uses it
    import numpy as np


def truncated_normal_std(a: float = -2.0, b: float = 2.0) -> float:
    r"""Std of a standard normal truncated to :math:`[a, b]` (in units of std).

    .. math:: \sqrt{1 + \frac{a\phi(a) - b\phi(b)}{Z} - \left(\frac{\phi(a) - \phi(b)}{Z}\right)^2},
              \quad Z = \Phi(b) - \Phi(a)

    >>> round(truncated_normal_std(-2, 2), 8)  # Keras' 0.87962566 correction
    0.87962566
    """
    if not a < b:
        raise InitlabError(f"truncation bounds need a < b, got a={a}, b={b}")
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(b) - cdf(a)
    mean = (pdf(a) - pdf(b)) / z
    return math.sqrt(1 + (a * pdf(a) - b * pdf(b)) / z - mean**2)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _trunc_normal_(tensor: torch.Tensor, mean: float, std: float, low: float, high: float,
                   generator: torch.Generator | None) -> torch.Tensor:  # fmt: skip
    r"""A normal cut to ``[low, high]``: by rejection when most of the mass is inside.

    Rejection stays close to ``normal_``'s speed: draw :math:`x \sim N(\text{mean}, \text{std}^2)` for
    every element, then redraw the :math:`k_1` values outside the bounds (4.6% at +-2 std) with
    one ``normal_`` of :math:`k_1` values, the :math:`k_2` of those still outside with one more,
    and so on until none is left. Conditioned on landing inside, each value is exactly the
    truncated normal. The inverse-CDF sampler of :func:`torch.nn.init.trunc_normal_` (erfinv)
    runs 5-10x slower, so it is used only when less than half the mass lies inside the bounds.
    """
    a, b = (low - mean) / std, (high - mean) / std
    if _normal_cdf(b) - _normal_cdf(a) < 0.5 or not tensor.is_contiguous():
        return nn.init.trunc_normal_(tensor, mean, std, low, high, generator=generator)
    flat = tensor.view(-1)
    flat.normal_(mean, std, generator=generator)
    plain = flat.detach()
    if (
        type(plain) is torch.Tensor
        and plain.device.type == "cpu"
        and plain.dtype in _NUMPY_FLOATS
        and importlib.util.find_spec("numpy") is not None  # optional: the loop below is the same
    ):
        _redraw_outside_cpu(plain.numpy(), mean, std, low, high, generator)
        return tensor
    idx = ((flat < low) | (flat > high)).nonzero().squeeze(1)
    while idx.numel():
        redraw = torch.empty(idx.numel(), dtype=flat.dtype, device=flat.device)
        redraw.normal_(mean, std, generator=generator)
        flat[idx] = redraw
        idx = idx[(redraw < low) | (redraw > high)]
    return tensor


_NUMPY_FLOATS = (torch.float32, torch.float64)
_CHUNK = 1 << 20  # elements compared per pass: the masks are reused, so memory stays warm
_SCRATCH = threading.local()


def _masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean work arrays of ``n`` elements, reused by this thread (fresh ones cost page
    faults: allocating them each time doubles the cost of finding the rejects)."""
    import numpy as np

    masks = getattr(_SCRATCH, "masks", None)
    if masks is None or masks[0].size < n:
        masks = (np.empty(n, dtype=bool), np.empty(n, dtype=bool))
        _SCRATCH.masks = masks
    return masks[0][:n], masks[1][:n]


def _outside(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Flat indices of the values outside ``[low, high]``, compared in the values' dtype."""
    import numpy as np

    lo, hi = values.dtype.type(low), values.dtype.type(high)  # as torch casts a scalar operand
    found = [np.empty(0, dtype=np.intp)]
    for start in range(0, values.size, _CHUNK):
        part = values[start : start + _CHUNK]
        below, above = _masks(part.size)
        np.less(part, lo, out=below)
        np.greater(part, hi, out=above)
        idx = np.flatnonzero(np.logical_or(below, above, out=below))
        found.append(idx + start if start else idx)
    return found[-1] if len(found) <= 2 else np.concatenate(found)


def _redraw_outside_cpu(values: np.ndarray, mean: float, std: float, low: float, high: float,
                        generator: torch.Generator | None) -> None:  # fmt: skip
    """The rejection rounds of :func:`_trunc_normal_` on a CPU array that shares the tensor's memory.

    Bit-identical to the tensor loop (same draws in the same order), but the replacements are
    settled among themselves first (``k_1`` values, small and in cache) and written once, and
    numpy's ``flatnonzero`` (with reused masks) finds the rejects faster than
    ``Tensor.nonzero``: on 1 B parameters the whole pass adds about 0.35 of a ``normal_`` fill
    into fresh memory (CPU time), where the tensor loop added about 0.6
    (``benchmarks/bench_scale.py``).
    """
    import numpy as np

    bad = _outside(values, low, high)
    if not bad.size:
        return
    dtype = torch.float32 if values.dtype == np.float32 else torch.float64
    fill = torch.empty(bad.size, dtype=dtype).normal_(mean, std, generator=generator).numpy()
    idx = _outside(fill, low, high)
    while idx.size:
        redraw = torch.empty(idx.size, dtype=dtype).normal_(mean, std, generator=generator).numpy()
        fill[idx] = redraw
        idx = idx[_outside(redraw, low, high)]
    values[bad] = fill


@dataclass(frozen=True)
class Distribution:
    """An i.i.d. distribution for every element: what elementwise schemes draw from.

    ``kind`` is "normal" (mean, scale=std), "uniform" (on [low, high]), "trunc_normal" (a normal of
    mean and scale, cut to [low, high] absolute) or "constant" (mean).
    """

    kind: Literal["normal", "uniform", "trunc_normal", "constant"]
    mean: float = 0.0
    scale: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @property
    def std(self) -> float:
        """The distribution's standard deviation."""
        if self.kind == "normal":
            return self.scale
        if self.kind == "uniform":
            return (self.high - self.low) / math.sqrt(12)
        if self.kind == "trunc_normal":
            a, b = (self.low - self.mean) / self.scale, (self.high - self.mean) / self.scale
            return self.scale * truncated_normal_std(a, b)
        return 0.0

    def sample_(
        self, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Fill ``tensor`` in place (with :mod:`torch.nn.init`'s samplers)."""
        with torch.no_grad():
            if self.kind == "normal":
                return nn.init.normal_(tensor, self.mean, self.scale, generator=generator)
            if self.kind == "uniform":
                return nn.init.uniform_(tensor, self.low, self.high, generator=generator)
            if self.kind == "trunc_normal":
                return _trunc_normal_(tensor, self.mean, self.scale, self.low, self.high, generator)
            return tensor.fill_(self.mean)

    def describe(self) -> str:
        """A short text such as ``N(0, 0.0442)``."""
        if self.kind == "normal":
            return f"N({self.mean:g}, {self.scale:.4g})"
        if self.kind == "uniform":
            return f"U({self.low:.4g}, {self.high:.4g})"
        if self.kind == "trunc_normal":
            return f"TN({self.mean:g}, {self.scale:.4g}, [{self.low:.4g}, {self.high:.4g}])"
        return f"const({self.mean:g})"


def variance_scaling(
    fans: Fans, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
) -> Distribution:
    r"""The distribution of :func:`variance_scaling_`: std :math:`\sqrt{\text{scale}/n}`.

    >>> round(variance_scaling(Fans(100, 50), 2.0, "fan_in", "normal").std, 6)
    0.141421
    """
    check_choice("distribution", distribution, ["normal", "truncated_normal", "uniform"])
    if scale <= 0:
        raise InitlabError(f"variance_scaling needs scale > 0, got {scale}")
    std = math.sqrt(scale / fans.mode(mode))
    if distribution == "normal":
        return Distribution("normal", 0.0, std)
    if distribution == "uniform":
        bound = math.sqrt(3.0) * std
        return Distribution("uniform", 0.0, 0.0, -bound, bound)
    s = std / truncated_normal_std(-2.0, 2.0)
    return Distribution("trunc_normal", 0.0, s, -2 * s, 2 * s)
