r"""Activation gains: the factor that keeps a layer's output variance equal to its input variance.

For a layer ``y = W f(x)`` with ``W`` drawn at std ``gain / sqrt(fan_in)`` and ``x ~ N(0, 1)``,

.. math::
    \operatorname{Var}[y] = \text{gain}^2 \, \mathbb{E}_{z \sim N(0,1)}[f(z)^2],

so the variance-preserving gain is :math:`1 / \sqrt{\mathbb{E}[f(z)^2]}` (He et al. 2015 give
:math:`\sqrt{2}` for ReLU this way). The classic values of :func:`torch.nn.init.calculate_gain`
are kept for the activations torch names (tanh 5/3 and selu 3/4 are torch's choices, not this
formula; linear, conv and sigmoid are 1). Every other activation's gain is this formula, computed
once by the trapezoid rule on [-12, 12] (480,001 points; error below 1e-8, kinks included) and
cached:

==============  ======  ==============  ======
activation      gain    activation      gain
==============  ======  ==============  ======
gelu            1.5335  silu / swish    1.6765
mish            1.4868  elu, celu       1.2452
softplus        1.0419  logsigmoid      1.0419
hardswish       1.7367  hardsigmoid     1.8978
hardtanh        1.3920  softsign        2.3375
relu6           1.4142  quick_gelu      1.5395
sin             1.5209  tanhshrink      2.3384
==============  ======  ==============  ======

(The table is checked against the computation by the test suite.)

**Depth.** Layer after layer, the second moment :math:`q_l` of the pre-activations follows the map
:math:`q_{l+1} = M(q_l) = \text{gain}^2\, \mathbb{E}[f(\sqrt{q_l}\, z)^2]`, and the gain makes
:math:`q = 1` a fixed point. Whether a deep plain stack (no normalization, no residuals) stays
there depends on the slope :math:`\chi = M'(1)`. It is below 1 for elu, celu, softplus,
logsigmoid, hardsigmoid, hardtanh, softsign and sin (deviations die out); it is exactly 1 for
relu, relu6 (below its cap), leaky_relu and linear (:math:`\log q` does a random walk of variance
about :math:`5L/\text{width}` for ReLU, Hanin & Rolnick 2018). For gelu, silu, quick_gelu, hardswish,
mish and tanhshrink it is above 1 (1.14, 1.17, 1.14, 1.22, 1.08, 1.83): :math:`M(q)/q` grows with
:math:`q`, so no gain makes the fixed point attract, and a plain stack of some tens of layers drifts
away from unit variance although each layer preserves it. torch's tanh 5/3, sigmoid 1 and selu
3/4 have their own stable fixed points, :math:`q^* \approx` 1.18, 0.265 and 0.023 (for
self-normalizing SELU use gain 1, i.e. LeCun init).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InitlabError, check_choice

__all__ = ["ACTIVATIONS", "activation_name", "gain", "moment", "second_moment"]

# functions of a standard-normal input, for the gains computed by quadrature
_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "mish": F.mish,
    "elu": F.elu,
    "celu": F.celu,
    "softplus": F.softplus,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "hardtanh": F.hardtanh,
    "softsign": F.softsign,
    "relu6": F.relu6,
    "logsigmoid": F.logsigmoid,
    "sin": torch.sin,
    "tanhshrink": F.tanhshrink,
}
_ALIASES = {"swish": "silu", "identity": "linear", "none": "linear", "prelu": "leaky_relu"}
_TORCH_TABLE = (
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
)  # fmt: skip
ACTIVATIONS: tuple[str, ...] = _TORCH_TABLE + tuple(_FUNCTIONS) + tuple(_ALIASES)

# module classes and functionals -> canonical names, used by the graph tracer too
_MODULE_NAMES: dict[type, str] = {
    nn.Identity: "linear", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu", nn.PReLU: "leaky_relu", nn.SELU: "selu", nn.GELU: "gelu",
    nn.SiLU: "silu", nn.Mish: "mish", nn.ELU: "elu", nn.CELU: "celu", nn.Softplus: "softplus",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Hardtanh: "hardtanh",
    nn.Softsign: "softsign", nn.ReLU6: "relu6", nn.LogSigmoid: "logsigmoid",
    nn.Tanhshrink: "tanhshrink", nn.RReLU: "leaky_relu",
}  # fmt: skip


@functools.cache
def second_moment(name: str) -> float:
    r""":math:`\mathbb{E}_{z \sim N(0,1)}[f(z)^2]` by the trapezoid rule on [-12, 12].

    >>> round(second_moment("relu"), 6)
    0.5
    """
    fn = _FUNCTIONS.get(name) or {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                                  "selu": F.selu, "linear": lambda x: x}.get(name)  # fmt: skip
    if fn is None:
        raise InitlabError(f"no function known for activation {name!r}")
    z = torch.linspace(-12.0, 12.0, 480_001, dtype=torch.float64)  # step 5e-5
    density = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    fz = fn(z)
    return float(torch.trapezoid(fz**2 * density, z))


def moment(nonlinearity: object, q: float = 1.0, param: float | None = None) -> float:
    r""":math:`\mathbb{E}_{z \sim N(0,1)}[f(\sqrt{q}\, z)^2]`: the second moment of an activation's
    output when its input has second moment ``q`` (the map :math:`M(q) / \text{gain}^2` of the
    module docstring). Exact for the positively homogeneous ones (linear: ``q``, ReLU: ``q/2``,
    leaky ReLU: ``q (1 + a^2) / 2``); otherwise the trapezoid rule on 24,001 points of
    [-12, 12] (relative error below 1e-6 for ``q`` up to 1e4).

    >>> moment("relu", 3.0), round(moment("silu"), 4) == round(second_moment("silu"), 4)
    (1.5, True)
    """
    name = activation_name(nonlinearity)
    if name == "linear" or name.startswith(("conv", "conv_transpose")):
        return float(q)
    if name == "relu":
        return q / 2
    if name == "leaky_relu":
        slope = _negative_slope(nonlinearity, _check_slope(param))
        slope = 0.01 if slope is None else slope
        return q * (1 + slope**2) / 2
    return _moment(name, round(float(q), 12))


@functools.lru_cache(maxsize=4096)
def _moment(name: str, q: float) -> float:
    fn = _FUNCTIONS.get(name) or {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "selu": F.selu}.get(
        name
    )
    if fn is None:
        raise InitlabError(f"no function known for activation {name!r}")
    z = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
    density = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(fn(math.sqrt(q) * z) ** 2 * density, z))


def activation_name(act: object) -> str:
    """Canonical name of an activation given as a name, a module, a module class or a functional.

    >>> activation_name(nn.ReLU(inplace=True)), activation_name(torch.tanh), activation_name("Swish")
    ('relu', 'tanh', 'silu')
    """
    if act is None:
        return "linear"
    if isinstance(act, str):
        name = act.lower()
        return _ALIASES.get(name, name)
    cls = act if isinstance(act, type) else type(act)
    for klass, name in _MODULE_NAMES.items():
        if issubclass(cls, klass):
            return name
    fn_name = getattr(act, "__name__", "").lower().removesuffix("_")
    if fn_name:
        return _ALIASES.get(fn_name, fn_name)
    raise InitlabError(f"cannot name the activation {act!r}; pass its name as a string")


def _check_slope(param: object) -> float | None:
    """``param`` as torch's ``calculate_gain`` accepts it: ``None`` or an int/float, not a bool."""
    if param is None or (isinstance(param, (int, float)) and not isinstance(param, bool)):
        return param
    raise InitlabError(
        f"negative_slope {param!r} is not a valid number: leaky_relu's parameter (kaiming's `a`) "
        "must be an int or a float, e.g. 0.01"
    )


def _negative_slope(act: object, param: float | None) -> float | None:
    if param is not None:
        return param
    if isinstance(act, nn.LeakyReLU):
        return act.negative_slope
    if isinstance(act, nn.PReLU):
        return float(act.weight.detach().mean())
    if isinstance(act, nn.RReLU):
        return (act.lower + act.upper) / 2
    return None


def gain(nonlinearity: object = "linear", param: float | None = None) -> float:
    r"""The recommended gain for an activation (see the module docstring for the definition).

    Args:
        nonlinearity: a name (``"relu"``, ``"gelu"``, ...), an activation module or class, or a
            functional such as ``torch.tanh``.
        param: the negative slope of ``leaky_relu`` (default 0.01, or read from the module); an
            int or a float (a bool, a string or a list raises ``ValueError``, as in torch).

    >>> gain("relu") == math.sqrt(2), gain("tanh"), round(gain("gelu"), 4)
    (True, 1.6666666666666667, 1.5335)
    >>> round(gain(nn.LeakyReLU(0.2)), 6) == round(math.sqrt(2 / (1 + 0.2**2)), 6)
    True
    """
    name = activation_name(nonlinearity)
    if name in ("linear", "sigmoid") or name.startswith(("conv", "conv_transpose")):
        check_choice("nonlinearity", name, ACTIVATIONS)
        return 1.0
    if name == "tanh":
        return 5.0 / 3
    if name == "relu":
        return math.sqrt(2.0)
    if name == "leaky_relu":
        slope = _negative_slope(nonlinearity, _check_slope(param))
        slope = 0.01 if slope is None else slope
        return math.sqrt(2.0 / (1 + slope**2))
    if name == "selu":
        return 3.0 / 4
    check_choice("nonlinearity", name, ACTIVATIONS)
    return 1.0 / math.sqrt(second_moment(name))
