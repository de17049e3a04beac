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

The package: :mod:`~initlab.schemes.sampling` (elementwise distributions and the
truncated-normal sampler), :mod:`~initlab.schemes.structured` (orthogonal, identity, Dirac,
sparse, ZerO), :mod:`~initlab.schemes.registry` (:data:`SCHEMES`, :func:`get_scheme`) and
:mod:`~initlab.schemes.inplace` (the ``torch.nn.init``-style functions).
"""

from __future__ import annotations

from .inplace import (
    constant_,
    delta_orthogonal_,
    dirac_,
    identity_,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal_,
    ones_,
    orthogonal_,
    sparse_,
    trunc_normal_,
    uniform_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zerO_,
    zeros_,
)
from .registry import SCHEMES, Scheme, get_scheme
from .sampling import Distribution, truncated_normal_std
from .sampling import _trunc_normal_ as _trunc_normal_
from .sampling import variance_scaling as variance_scaling
from .structured import hadamard as hadamard
from .structured import zero_matrix as zero_matrix

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
