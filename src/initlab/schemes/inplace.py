"""``torch.nn.init``-style functions: in place on a tensor, or on a module's parameter by name."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from ..connectivity import Fans, parameter, tensor_fans
from ..connectivity import fans as module_fans
from ..errors import InitlabError, check_choice
from ..gains import gain
from .registry import (
    SCHEMES,
)
from .structured import (
    _delta_orthogonal_apply,
    _dirac_apply,
    _identity_apply,
    _orthogonal_apply,
    _sparse_apply,
    _zero_apply,
)

Target = torch.Tensor | nn.Module
Mode = Literal["fan_in", "fan_out", "fan_avg"]
DistributionName = Literal["normal", "truncated_normal", "uniform"]


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
