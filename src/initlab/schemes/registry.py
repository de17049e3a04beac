"""The registry: :data:`SCHEMES` by plain name, each a :class:`Scheme`; :func:`get_scheme`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..connectivity import Fans, tensor_fans
from ..errors import InitlabError, check_choice
from .sampling import (
    Distribution,
    truncated_normal_std,
    variance_scaling,
)
from .structured import (
    _delta_orthogonal_apply,
    _dirac_apply,
    _identity_apply,
    _orthogonal_apply,
    _sparse_apply,
    _zero_apply,
)


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
