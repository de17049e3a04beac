r"""Initialization schemes: pure tensor functions with explicit fans, gain and generator.

Each public scheme mirrors :mod:`torch.nn.init` (``kaiming_normal_(target, a=0, mode="fan_in",
nonlinearity="leaky_relu", *, generator=None)``) and writes in place, but ``target`` may also be a
module with ``name=`` naming its parameter, in which case the fans come from
:func:`initlab.fans` (right for grouped/transposed convolutions) and matrices stacked along dim 0
(attention Q/K/V, RNN gates) are treated one chunk at a time.

All fan-based schemes are one function, :func:`variance_scaling_`:

.. math::
    \sigma = \sqrt{\text{scale} / n}, \qquad n \in \{\text{fan\_in}, \text{fan\_out},
    (\text{fan\_in} + \text{fan\_out}) / 2\}

drawn as a normal, a truncated normal (cut at 2 sigma and rescaled so its std is exactly sigma),
or a uniform on :math:`[-\sqrt{3}\sigma, \sqrt{3}\sigma]`. Xavier is ``scale = gain^2``,
``mode = fan_avg``; Kaiming ``scale = gain^2``, ``mode = fan_in`` (or fan_out); LeCun ``scale = 1``,
``mode = fan_in`` (Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998; Klambauer et al. 2017).

The registry :data:`SCHEMES` names each scheme by a plain name; the planner calls
``SCHEMES[name].apply(tensor, fans=..., gain=..., generator=..., **kwargs)``.

As in :mod:`torch.nn.init`: a zero-element tensor is left as it is, with the warning
"Initializing zero-element tensors is a no-op" from every scheme that reads the shape (plain
fills such as ``normal_`` stay silent); a meta tensor is left as it is by every scheme, after its
options are checked. Structured schemes (orthogonal, identity, sparse, ZerO) compute in float32,
or float64 for a float64 tensor, and round once to the tensor's dtype.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from .connectivity import Fans, parameter, tensor_fans
from .connectivity import fans as module_fans
from .errors import InitlabError, check_choice
from .gains import gain

if TYPE_CHECKING:  # numpy is optional: imported where the CPU sampler uses it
    import numpy as np

__all__ = [
    "SCHEMES",
    "Distribution",
    "Scheme",
    "constant_",
    "delta_orthogonal_",
    "dirac_",
    "get_scheme",
    "identity_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "sparse_",
    "trunc_normal_",
    "truncated_normal_std",
    "uniform_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zerO_",
    "zeros_",
]

Target = torch.Tensor | nn.Module
Mode = Literal["fan_in", "fan_out", "fan_avg"]
DistributionName = Literal["normal", "truncated_normal", "uniform"]


# ---------------------------------------------------------------------------------------------
# elementwise distributions


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


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Scheme:
    """A registered scheme.

    Attributes:
        name: the registry name.
        formula: the std or bound, for people (``initlab schemes`` prints it).
        apply: ``apply(tensor, *, fans, gain, generator, **kw)`` writes in place.
        distribution: for elementwise schemes, ``distribution(fans, gain, **kw)``; the planner
            draws these block by block (shardable); ``None`` for structured schemes.
        uses_fans: whether the scheme needs fans (and so a >= 2-D tensor).
        uses_gain: whether the activation gain enters the scheme.
        random: whether the scheme draws random numbers.
        kwargs: the options the scheme accepts (validated by the planner).
    """

    name: str
    formula: str
    apply: Callable[..., torch.Tensor]
    distribution: Callable[..., Distribution] | None = None
    uses_fans: bool = True
    uses_gain: bool = True
    random: bool = True
    kwargs: tuple[str, ...] = field(default_factory=tuple)

    def expected_std(
        self, shape: tuple[int, ...], fans: Fans | None, gain: float, **kw: Any
    ) -> float | None:
        """The std the scheme aims at for a tensor of ``shape`` (``None`` when not defined)."""
        if self.distribution is not None:
            return self.distribution(fans, gain, **kw).std
        if self.name in ("orthogonal", "delta_orthogonal") and fans is not None:
            rows, cols = fans.fan_out // fans.receptive_field, fans.fan_in
            if self.name == "delta_orthogonal":
                cols = fans.fan_in // fans.receptive_field
                return gain * math.sqrt(min(rows, cols) / (rows * cols * fans.receptive_field))
            return gain / math.sqrt(max(rows, cols))
        return None


def _elementwise(name: str, formula: str, dist: Callable[..., Distribution], *, uses_fans: bool,
                 uses_gain: bool, kwargs: tuple[str, ...], random: bool = True) -> Scheme:  # fmt: skip
    def apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
              generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:  # fmt: skip
        if tensor.numel() == 0:
            return tensor
        if fans is None and uses_fans:
            fans = tensor_fans(tensor)  # no module at hand: torch's shape convention
        distribution = dist(fans, gain, **kw)  # validates the options, meta tensors included
        if tensor.is_meta:
            return tensor
        return distribution.sample_(tensor, generator)

    return Scheme(name, formula, apply, dist, uses_fans, uses_gain, random, kwargs)


def _vs(mode: str, distribution: str, with_gain: bool = True) -> Callable[..., Distribution]:
    def dist(fans: Fans, gain: float = 1.0, **kw: Any) -> Distribution:
        _no_extra(kw, ())
        return variance_scaling(fans, gain**2 if with_gain else 1.0, mode, distribution)

    return dist


def _no_extra(kw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        raise InitlabError(
            f"unexpected options {extra}; this scheme accepts {list(allowed) or 'none'}"
        )


def _normal_dist(
    fans: Fans | None, gain: float = 1.0, *, mean: float = 0.0, std: float = 1.0
) -> Distribution:
    return Distribution("normal", mean, std)


def _uniform_dist(
    fans: Fans | None, gain: float = 1.0, *, a: float = 0.0, b: float = 1.0
) -> Distribution:
    if not a < b:
        raise InitlabError(f"uniform needs a < b, got a={a}, b={b}")
    return Distribution("uniform", 0.0, 0.0, a, b)


def _trunc_dist(fans: Fans | None, gain: float = 1.0, *, mean: float = 0.0, std: float = 1.0,
                a: float = -2.0, b: float = 2.0, exact_std: bool = False) -> Distribution:  # fmt: skip
    if std <= 0:
        raise InitlabError(f"trunc_normal needs std > 0, got {std}")
    if not a < b:
        raise InitlabError(f"trunc_normal needs a < b (in stds), got a={a}, b={b}")
    scale = std / truncated_normal_std(a, b) if exact_std else std
    return Distribution("trunc_normal", mean, scale, mean + a * scale, mean + b * scale)


def _constant_dist(fans: Fans | None, gain: float = 1.0, *, val: float = 0.0) -> Distribution:
    return Distribution("constant", float(val))


def _vs_dist(fans: Fans, gain: float = 1.0, *, scale: float = 1.0, mode: str = "fan_in",
             distribution: str = "truncated_normal") -> Distribution:  # fmt: skip
    return variance_scaling(fans, scale * gain**2, mode, distribution)


def _blocks(tensor: torch.Tensor, fans: Fans | None) -> int:
    """How many independent matrices are stacked along dim 0: chunks (gates, Q/K/V) x groups.

    Fans count one block: a block maps ``fan_in`` inputs to ``fan_out / receptive_field`` outputs,
    so it holds ``fan_in * fan_out / receptive_field`` elements. For a grouped (or transposed)
    convolution, whose fans are per group, this counts the groups; otherwise it is ``fans.chunks``.
    """
    if fans is None:
        return 1
    per_block, rest = divmod(fans.fan_in * fans.fan_out, fans.receptive_field)
    if rest == 0 and per_block > 0 and tensor.numel() % per_block == 0:
        n = tensor.numel() // per_block
        if n % fans.chunks == 0 and tensor.shape[0] % n == 0:
            return n
    return fans.chunks


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype structured schemes compute in: float32, or the tensor's own when it is wider.

    bf16/fp16 weights get float32 QR and Hadamard entries (then one rounding); float64 weights
    get float64 ones, so a float64 orthogonal matrix is orthogonal to ~1e-15, as torch's.
    """
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        return torch.promote_types(tensor.dtype, torch.float32)
    return torch.float32


def _chunks(tensor: torch.Tensor, fans: Fans | None) -> list[torch.Tensor]:
    """The blocks of :func:`_blocks` as views (one per LSTM gate, Q/K/V matrix or conv group)."""
    n = _blocks(tensor, fans)
    return list(tensor.chunk(n, dim=0)) if n > 1 else [tensor]


def _orthogonal_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"orthogonal needs a tensor with >= 2 dims, got shape {tuple(tensor.shape)}"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        for chunk in _chunks(tensor, fans):
            # QR in float32 (float64 for float64 tensors), on the CPU, then cast and copied
            work = torch.empty(chunk.shape, dtype=_work_dtype(tensor))
            nn.init.orthogonal_(work, gain, generator=generator)
            chunk.copy_(work)
    return tensor


def _delta_orthogonal_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 3:
        raise InitlabError(
            f"delta_orthogonal is for convolution kernels (>= 3 dims), got shape {tuple(tensor.shape)}; "
            "use 'orthogonal' for matrices"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        tensor.zero_()
        centre = tuple((k - 1) // 2 for k in tensor.shape[2:])
        for block in _chunks(tensor, fans):  # per group: each group's map is an isometry
            work = torch.empty(block.shape[:2], dtype=_work_dtype(tensor))
            nn.init.orthogonal_(work, gain, generator=generator)
            block[(slice(None), slice(None), *centre)] = work.to(tensor.dtype)
    return tensor


def _identity_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                    generator: torch.Generator | None = None, groups: int | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"identity needs a tensor with >= 2 dims, got shape {tuple(tensor.shape)}"
        )
    if tensor.dim() > 2:
        return _dirac_apply(tensor, fans=fans, gain=gain, groups=groups)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        for chunk in _chunks(tensor, fans):
            chunk.copy_(torch.eye(*chunk.shape, dtype=_work_dtype(tensor)) * gain)
    return tensor


def _dirac_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                 generator: torch.Generator | None = None, groups: int | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() not in (3, 4, 5):
        raise InitlabError(
            f"dirac is for Conv1d/2d/3d kernels (3-5 dims), got shape {tuple(tensor.shape)}; "
            "use 'identity' for matrices"
        )
    if groups is None:  # a grouped conv's fans are per group
        groups = _blocks(tensor, fans)
    if tensor.shape[0] % groups:
        raise InitlabError(
            f"dirac: {tensor.shape[0]} output channels do not split into {groups} groups"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        nn.init.dirac_(tensor, groups)
        return tensor.mul_(gain)


def _sparse_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                  generator: torch.Generator | None = None, sparsity: float = 0.9,
                  std: float = 0.01) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() != 2:
        raise InitlabError(
            f"sparse needs a 2-D weight matrix, got shape {tuple(tensor.shape)}; "
            "it zeroes a fraction of each column (Martens 2010)"
        )
    if not 0.0 <= sparsity < 1.0:
        raise InitlabError(f"sparse needs 0 <= sparsity < 1, got {sparsity}")
    if tensor.is_meta:
        return tensor
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    with torch.no_grad():
        # torch.nn.init.sparse_ draws its zero pattern from the global RNG (randperm without the
        # generator); here every draw comes from `generator`: a random permutation per column.
        # Values in float32 (float64 for float64 tensors); the pattern's draws are float32 always.
        values = torch.empty(rows, cols, dtype=_work_dtype(tensor))
        values.normal_(0.0, std, generator=generator)
        order = torch.rand(rows, cols, generator=generator).argsort(dim=0)
        values.scatter_(0, order[:num_zeros], 0.0)
        tensor.copy_(values)
    return tensor


def hadamard(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two), entries +-1.

    >>> hadamard(2)
    tensor([[ 1.,  1.],
            [ 1., -1.]])
    """
    if n < 1 or n & (n - 1):
        raise InitlabError(f"Hadamard order must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def zero_matrix(m: int, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""ZerO's deterministic ``(m, n)`` matrix (Zhao et al. 2022, Algorithm 1, official code).

    Identity when ``m == n``; partial identity ``eye(m, n)`` when ``m < n``; when ``m > n``,
    :math:`H_p[:m, :n] / \sqrt{p}` with :math:`p = 2^{\lceil \log_2 m \rceil}` and :math:`H_p` the
    Sylvester Hadamard matrix (the paper prints the constant :math:`2^{-(k-1)/2}`, a factor
    :math:`\sqrt{2}` larger; the official code, which we follow, uses :math:`1/\sqrt{p}`).

    >>> zero_matrix(3, 2)
    tensor([[ 0.5000,  0.5000],
            [ 0.5000, -0.5000],
            [ 0.5000,  0.5000]])
    """
    if m <= n:
        return torch.eye(m, n, dtype=dtype)
    p = 1 << math.ceil(math.log2(m))
    return hadamard(p, dtype)[:m, :n] / math.sqrt(p)


def _warn_tied(block: torch.Size, whole: torch.Size) -> None:
    """ZerO widening one input to many outputs makes identical units: say so."""
    if block[1] == 1 and block[0] > 1:
        warnings.warn(
            f"ZerO on a weight of shape {tuple(whole)} widens 1 input to {block[0]} outputs: the "
            "Hadamard block's only column is all ones, so those units start identical and, with "
            "nothing random in the init, stay tied (e.g. a stem on 1-channel images). Give this "
            "layer a random scheme, e.g. rules={'<its name>': 'kaiming_normal'}",
            UserWarning,
            stacklevel=4,
        )


def _zero_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"ZerO needs a weight with >= 2 dims, got shape {tuple(tensor.shape)}; biases are zeros"
        )
    if tensor.is_meta:
        return tensor
    dtype = torch.float64  # exact +-1 / sqrt(p) entries, rounded once to the tensor's dtype
    with torch.no_grad():
        if tensor.dim() == 2:
            for chunk in _chunks(tensor, fans):
                _warn_tied(chunk.shape, tensor.shape)
                chunk.copy_(zero_matrix(*chunk.shape, dtype))
            return tensor
        tensor.zero_()
        centre = tuple(k // 2 for k in tensor.shape[2:])
        for block in _chunks(tensor, fans):  # per group of a grouped conv
            _warn_tied(block.shape, tensor.shape)
            block[(slice(None), slice(None), *centre)] = zero_matrix(*block.shape[:2], dtype).to(
                tensor.dtype
            )
    return tensor


_GAIN_NOTE = "gain = activation gain (see initlab.gain)"
SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        _elementwise("zeros", "0", lambda f, g=1.0: Distribution("constant", 0.0),
                     uses_fans=False, uses_gain=False, kwargs=(), random=False),
        _elementwise("ones", "1", lambda f, g=1.0: Distribution("constant", 1.0),
                     uses_fans=False, uses_gain=False, kwargs=(), random=False),
        _elementwise("constant", "val", _constant_dist, uses_fans=False, uses_gain=False,
                     kwargs=("val",), random=False),
        _elementwise("normal", "N(mean, std^2)", _normal_dist, uses_fans=False, uses_gain=False,
                     kwargs=("mean", "std")),
        _elementwise("uniform", "U(a, b)", _uniform_dist, uses_fans=False, uses_gain=False,
                     kwargs=("a", "b")),
        _elementwise("trunc_normal", "N(mean, std^2) cut at mean + [a, b] * std (exact_std: "
                     "rescaled so the std is std)", _trunc_dist, uses_fans=False, uses_gain=False,
                     kwargs=("mean", "std", "a", "b", "exact_std")),
        _elementwise("variance_scaling", "std = gain * sqrt(scale / n), n = fan_in | fan_out | "
                     "fan_avg; normal, truncated_normal (exact std) or uniform",
                     _vs_dist, uses_fans=True, uses_gain=True,
                     kwargs=("scale", "mode", "distribution")),
        _elementwise("xavier_uniform", "bound = gain * sqrt(6 / (fan_in + fan_out))",
                     _vs("fan_avg", "uniform"), uses_fans=True, uses_gain=True, kwargs=()),
        _elementwise("xavier_normal", "std = gain * sqrt(2 / (fan_in + fan_out))",
                     _vs("fan_avg", "normal"), uses_fans=True, uses_gain=True, kwargs=()),
        _elementwise("kaiming_uniform", "bound = gain * sqrt(3 / fan_in)",
                     _vs("fan_in", "uniform"), uses_fans=True, uses_gain=True, kwargs=()),
        _elementwise("kaiming_normal", "std = gain / sqrt(fan_in)",
                     _vs("fan_in", "normal"), uses_fans=True, uses_gain=True, kwargs=()),
        _elementwise("kaiming_normal_fan_out", "std = gain / sqrt(fan_out)",
                     _vs("fan_out", "normal"), uses_fans=True, uses_gain=True, kwargs=()),
        _elementwise("lecun_uniform", "bound = sqrt(3 / fan_in)",
                     _vs("fan_in", "uniform", False), uses_fans=True, uses_gain=False, kwargs=()),
        _elementwise("lecun_normal", "std = 1 / sqrt(fan_in), truncated at 2 std (exact std)",
                     _vs("fan_in", "truncated_normal", False), uses_fans=True, uses_gain=False,
                     kwargs=()),
        Scheme("orthogonal", "Q from QR of N(0,1), per chunk or group, times gain; std = gain / "
               "sqrt(max(rows, cols))", _orthogonal_apply),
        Scheme("delta_orthogonal", "conv: orthogonal (out, in) x gain at the centre tap (per "
               "group), zeros elsewhere", _delta_orthogonal_apply),
        Scheme("sparse", "a fraction `sparsity` of each column zero, the rest N(0, std^2)",
               _sparse_apply, uses_fans=False, uses_gain=False, kwargs=("sparsity", "std")),
        Scheme("identity", "gain * eye(out, in) per chunk (partial identity); conv: dirac",
               _identity_apply, uses_fans=False, random=False, kwargs=("groups",)),
        Scheme("dirac", "conv kernel that returns its input (per group), times gain",
               _dirac_apply, uses_fans=False, random=False, kwargs=("groups",)),
        Scheme("ZerO", "eye if out <= in, else Hadamard H_p[:out, :in] / sqrt(p); conv: at centre",
               _zero_apply, uses_fans=False, uses_gain=False, random=False),
    ]
}  # fmt: skip
_ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
            "he_normal": "kaiming_normal", "he_uniform": "kaiming_uniform", "zerO": "ZerO",
            "eye": "identity", "truncated_normal": "trunc_normal"}  # fmt: skip
# names that would silently mean one of two schemes: an error that offers both
_AMBIGUOUS = {"zero": ("zeros", "ZerO"), "Zero": ("zeros", "ZerO"), "ZERO": ("zeros", "ZerO")}


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name (aliases such as ``he_normal`` accepted).

    >>> get_scheme("glorot_uniform").name
    'xavier_uniform'
    """
    if isinstance(name, Scheme):
        return name
    if name in _AMBIGUOUS:
        a, b = _AMBIGUOUS[name]
        raise InitlabError(
            f"unknown scheme {name!r}: it could mean {a!r} (fill with 0) or {b!r} (ZerO init, Zhao "
            f"et al. 2022: identity / Hadamard weights); name the one you mean"
        )
    key = _ALIASES.get(name, name)
    if key not in SCHEMES:
        check_choice("scheme", name, [*SCHEMES, *_ALIASES])
    return SCHEMES[key]


# ---------------------------------------------------------------------------------------------
# torch.nn.init-style functions


def _resolve(
    target: Target, name: str, fans: Fans | None, needs_fans: bool, *, warn_empty: bool = True
) -> tuple[torch.Tensor, Fans | None]:
    """The tensor to fill and its fans (from the module when there is one).

    A zero-element tensor has no fans and nothing to write: as :mod:`torch.nn.init` does, schemes
    that read the shape warn "Initializing zero-element tensors is a no-op" and the scheme's
    ``apply`` returns it untouched (plain fills such as ``normal_`` stay silent, as torch's).
    """
    if isinstance(target, nn.Module):
        tensor = parameter(target, name)
    elif isinstance(target, torch.Tensor):
        tensor = target
    else:
        raise InitlabError(f"expected a tensor or an nn.Module, got {type(target).__name__}")
    if tensor.numel() == 0:
        if warn_empty:
            warnings.warn("Initializing zero-element tensors is a no-op", UserWarning, stacklevel=4)
        return tensor, fans
    if isinstance(target, nn.Module):
        if (fans is None and tensor.dim() >= 2) or (fans is None and needs_fans):
            fans = module_fans(target, name)
    elif fans is None and needs_fans:
        fans = tensor_fans(tensor)
    return tensor, fans


def _run(scheme: str, target: Target, name: str, fans: Fans | None, gain: float,
         generator: torch.Generator | None, **kw: Any) -> torch.Tensor:  # fmt: skip
    s = SCHEMES[scheme]
    tensor, fans = _resolve(target, name, fans, s.uses_fans, warn_empty=s.uses_fans)
    return s.apply(tensor, fans=fans, gain=gain, generator=generator, **kw)


def variance_scaling_(target: Target, scale: float = 1.0, mode: Mode = "fan_in",
                      distribution: DistributionName = "truncated_normal", *, name: str = "weight",
                      fans: Fans | None = None, generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""Fill with std :math:`\sqrt{\text{scale}/n}` (Keras' ``VarianceScaling``): the one scheme family.

    Args:
        target: a tensor, or a module whose parameter ``name`` is filled (fans from the module).
        scale: the variance numerator (``gain**2`` for Xavier/Kaiming).
        mode: ``n`` is ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"normal"``, ``"truncated_normal"`` (cut at 2 std, rescaled to exact std)
            or ``"uniform"``.

    >>> w = variance_scaling_(torch.empty(256, 512), 2.0, "fan_in", "normal",
    ...                       generator=torch.Generator().manual_seed(0))
    >>> abs(w.std().item() - (2 / 512) ** 0.5) < 0.001
    True
    """
    check_choice("mode", mode, ["fan_in", "fan_out", "fan_avg"])
    return _run("variance_scaling", target, name, fans, 1.0, generator, scale=scale, mode=mode,
                distribution=distribution)  # fmt: skip


def xavier_uniform_(target: Target, gain: float = 1.0, *, name: str = "weight", fans: Fans | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""Glorot & Bengio (2010): :math:`U(-b, b)`, :math:`b = \text{gain}\sqrt{6/(\text{fan\_in}+\text{fan\_out})}`.

    >>> xavier_uniform_(nn.Linear(3, 5), gain=gain("tanh")).shape
    torch.Size([5, 3])
    """
    return _run("xavier_uniform", target, name, fans, gain, generator)


def xavier_normal_(target: Target, gain: float = 1.0, *, name: str = "weight", fans: Fans | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""Glorot & Bengio (2010): :math:`N(0, \sigma^2)`, :math:`\sigma = \text{gain}\sqrt{2/(\text{fan\_in}+\text{fan\_out})}`."""
    return _run("xavier_normal", target, name, fans, gain, generator)


def _kaiming_gain(a: float, nonlinearity: str) -> float:
    return gain(nonlinearity, a)


def kaiming_uniform_(target: Target, a: float = 0.0, mode: Mode = "fan_in", nonlinearity: str = "leaky_relu",
                     *, name: str = "weight", fans: Fans | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""He et al. (2015): :math:`U(-b, b)`, :math:`b = \text{gain}\sqrt{3/n}`, ``n`` = fan of ``mode``."""
    g = _kaiming_gain(a, nonlinearity)
    return variance_scaling_(
        target, g * g, mode, "uniform", name=name, fans=fans, generator=generator
    )


def kaiming_normal_(target: Target, a: float = 0.0, mode: Mode = "fan_in", nonlinearity: str = "leaky_relu",
                    *, name: str = "weight", fans: Fans | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""He et al. (2015): :math:`N(0, \sigma^2)`, :math:`\sigma = \text{gain}/\sqrt{n}`, ``n`` = fan of ``mode``.

    >>> conv = nn.Conv2d(6, 12, 3, groups=3)
    >>> w = kaiming_normal_(conv, nonlinearity="relu", generator=torch.Generator().manual_seed(0))
    >>> round((2 / 18) ** 0.5, 4)  # fan_in 18 = 6/3 * 3*3, the same as torch's
    0.3333
    """
    g = _kaiming_gain(a, nonlinearity)
    return variance_scaling_(
        target, g * g, mode, "normal", name=name, fans=fans, generator=generator
    )


def lecun_uniform_(target: Target, *, name: str = "weight", fans: Fans | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""LeCun et al. (1998): :math:`U(-b, b)`, :math:`b = \sqrt{3/\text{fan\_in}}`."""
    return variance_scaling_(
        target, 1.0, "fan_in", "uniform", name=name, fans=fans, generator=generator
    )


def lecun_normal_(target: Target, *, name: str = "weight", fans: Fans | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""LeCun normal as in Keras/JAX (for SELU): truncated normal at 2 std with exact std :math:`1/\sqrt{\text{fan\_in}}`."""
    return variance_scaling_(target, 1.0, "fan_in", "truncated_normal", name=name, fans=fans,
                             generator=generator)  # fmt: skip


def normal_(target: Target, mean: float = 0.0, std: float = 1.0, *, name: str = "weight",
            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """:math:`N(\\text{mean}, \\text{std}^2)`."""
    return _run("normal", target, name, None, 1.0, generator, mean=mean, std=std)


def uniform_(target: Target, a: float = 0.0, b: float = 1.0, *, name: str = "weight",
             generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """:math:`U(a, b)`."""
    return _run("uniform", target, name, None, 1.0, generator, a=a, b=b)


def trunc_normal_(target: Target, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  *, exact_std: bool = False, name: str = "weight",
                  generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""Normal cut to ``[mean + a*std, mean + b*std]``: bounds in units of std.

    Differs from :func:`torch.nn.init.trunc_normal_`, whose ``a, b`` are absolute (so for std 0.02
    nothing is cut). With ``exact_std=True`` the normal is widened by ``1 / truncated_normal_std(a, b)``
    (0.8796 at +-2 std, Keras' correction) so the result has std exactly ``std``.

    >>> w = trunc_normal_(torch.empty(100_000), std=0.02, generator=torch.Generator().manual_seed(0))
    >>> bool(w.abs().max() <= 0.04)
    True
    """
    return _run("trunc_normal", target, name, None, 1.0, generator, mean=mean, std=std, a=a, b=b,
                exact_std=exact_std)  # fmt: skip


def constant_(target: Target, val: float, *, name: str = "weight") -> torch.Tensor:
    """Fill with ``val``."""
    return _run("constant", target, name, None, 1.0, None, val=val)


def zeros_(target: Target, *, name: str = "weight") -> torch.Tensor:
    """Fill with 0."""
    return _run("zeros", target, name, None, 1.0, None)


def ones_(target: Target, *, name: str = "weight") -> torch.Tensor:
    """Fill with 1."""
    return _run("ones", target, name, None, 1.0, None)


def orthogonal_(target: Target, gain: float = 1.0, *, name: str = "weight", fans: Fans | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """(Semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014), one per chunk (each LSTM gate).

    Dims past the second are flattened. A grouped convolution gets one matrix per group (torch's
    ``orthogonal_`` makes the whole stack orthogonal instead, which shrinks each group's weights).
    QR runs in float32 (float64 for a float64 tensor), then the result is cast to the tensor.
    Zero-element tensors warn and return, meta tensors are left as they are (as torch).

    >>> lstm = nn.LSTM(8, 8)
    >>> w = orthogonal_(lstm, name="weight_hh_l0", generator=torch.Generator().manual_seed(0))
    >>> all(torch.allclose(c @ c.T, torch.eye(8), atol=1e-5) for c in w.detach().chunk(4))
    True
    """
    tensor, fans = _resolve(target, name, fans, False)
    return _orthogonal_apply(tensor, fans=fans, gain=gain, generator=generator)


def delta_orthogonal_(target: Target, gain: float = 1.0, *, name: str = "weight",
                      generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Delta-orthogonal conv kernel (Xiao et al. 2018): orthogonal x gain at the centre tap.

    The centre tap is ``(k - 1) // 2`` (as in JAX); a grouped conv gets one orthogonal matrix per
    group, so that every group (each channel of a depthwise conv) keeps its signal's norm.

    >>> conv = nn.Conv2d(4, 4, 3, groups=4)
    >>> w = delta_orthogonal_(conv, generator=torch.Generator().manual_seed(0))
    >>> w[:, 0, 1, 1].abs().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    tensor, fans = _resolve(target, name, None, False)
    return _delta_orthogonal_apply(tensor, fans=fans, gain=gain, generator=generator)


def _groups_of(target: Target, groups: int | None) -> int:
    if groups is not None:
        return groups
    return getattr(target, "groups", 1) if isinstance(target, nn.Module) else 1


def identity_(
    target: Target, gain: float = 1.0, *, name: str = "weight", groups: int | None = None
) -> torch.Tensor:
    """Partial identity ``gain * eye(out, in)`` (per chunk); a conv kernel becomes a Dirac delta.

    >>> identity_(torch.empty(2, 3))
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    """
    tensor, fans = _resolve(target, name, None, False)
    return _identity_apply(tensor, fans=fans, gain=gain, groups=_groups_of(target, groups))


def dirac_(
    target: Target, gain: float = 1.0, *, name: str = "weight", groups: int | None = None
) -> torch.Tensor:
    """Dirac kernel: the conv returns its input (per group; groups read from the module).

    >>> conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    >>> _ = dirac_(conv)
    >>> x = torch.randn(1, 4, 5, 5)
    >>> torch.allclose(conv(x), x)
    True
    """
    tensor, _ = _resolve(target, name, None, False)
    return _dirac_apply(tensor, gain=gain, groups=_groups_of(target, groups))


def sparse_(target: Target, sparsity: float, std: float = 0.01, *, name: str = "weight",
            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Martens (2010): in each column a fraction ``sparsity`` of the entries is 0, the rest N(0, std^2)."""
    tensor, _ = _resolve(target, name, None, False)
    return _sparse_apply(tensor, sparsity=sparsity, std=std, generator=generator)


def zerO_(target: Target, *, name: str = "weight") -> torch.Tensor:
    """ZerO (Zhao et al. 2022): deterministic identity / Hadamard weights; see :func:`zero_matrix`.

    Named after the paper's ZerO; for a tensor of zeros use :func:`zeros_`.

    >>> zerO_(torch.empty(2, 2))
    tensor([[1., 0.],
            [0., 1.]])
    """
    tensor, fans = _resolve(target, name, None, False)
    return _zero_apply(tensor, fans=fans)
