"""Plans: one decision per parameter, printable and serializable, applied from a seed.

:func:`plan` traces the model (:func:`initlab.graph.trace`), then decides each parameter's scheme,
fans, gain and target std, without touching a weight. :meth:`Plan.apply` draws every parameter
from its own random stream keyed by ``(seed, parameter name)`` (:mod:`initlab.rng`), so the
weights do not depend on module creation order, device, dtype or sharding.

Defaults (the policy; each entry says what decided it in ``source`` and ``note``):

=================  =========================================================================
parameter           default
=================  =========================================================================
weight of a layer   the chosen scheme, gain from the traced activation that follows the layer
                    (``initlab.gain``), fans from the module (per chunk for Q/K/V and gates)
head weight         the chosen scheme at gain ``HEAD_GAIN`` = 0.1 (``head_scale`` sets it): the
                    initial loss starts within ~0.01 of ``log(classes)``; :func:`init` then
                    measures it in one train-mode forward of the example
                    (:mod:`~initlab.planning.calibrate`): in a model with normalization it is
                    redrawn so its logits start at variance 0.025 (``LOGIT_VARIANCE_BUDGET``);
                    without, scaled down where its input's mean square exceeds 1
tied head           a table that is also the input embedding: N(0, (0.15 / sqrt(d))^2)
                    (``TIED_HEAD_GAIN``; ``head_scale`` replaces 0.15); when the head reads
                    its input times a constant ``c < 1`` (T5's ``d**-0.5``):
                    ``min(1, 0.35 / (c sqrt(d)))`` (``RESCALED_TIED_GAIN``)
attention query     scores the model does not scale by ``1/sqrt(d_k)`` (traced: ``q @ k^T`` to
                    softmax, or ``scaled_dot_product_attention``'s ``scale``): the query layer
                    at gain x ``1 / (factor sqrt(d_k))`` (T5's own query init)
summed embeddings   tables whose outputs the model adds (tokens, positions, segments; from
                    ``Graph.embedding_sums``) share one std: the tied table's, else 1
residual branch     with normalization layers: the last weight layer at gain x :math:`L^{-1/2}`
                    (``L`` branches); without any: the last weight layer 0 and the branch's
                    other weight layers x :math:`L^{-1/(2m-2)}` (Fixup's rule, no scalars);
                    ``residual_scale=False``: the plain gain
deep plain chain    ``DEEP_PLAIN_DEPTH`` = 10 or more weight layers, no norm, no branch: ZerO
                    (semi-orthogonal where a layer widens) where the traced activation keeps
                    an identity chain's signal (``IDENTITY_CHAIN_ACTIVATIONS``: ReLU family,
                    tanh-like, linear), else a random orthogonal map at the traced gain (a
                    chain with an expanding activation, GELU or SiLU: the shallow default);
                    the head at gain 1
                    if every activation fades (tanh, softsign), else ``DEEP_PLAIN_HEAD_GAIN`` = 0.3
recurrent weight    ``weight_hh_*``: orthogonal per gate (Saxe et al. 2014; Keras' default)
bias                0
norm weight / bias  1 / 0
embedding           N(0, 1) (torch's default)
deliberate values   kept: a parameter flagged ``_no_reinit`` or ``_is_hf_initialized``; a head,
                    branch end, norm or bias the model built as a constant other than its
                    module type's default (a zero classifier, a zero last BN gamma); a bias
                    entirely outside the default's range (Mamba's ``dt_proj.bias``)
other parameters    kept as they are (``keep``): scalars and tokens owned by containers
frozen              kept, unless ``include_frozen=True``
=================  =========================================================================

Rules override the defaults. A rule's key is, by precedence (the highest kind that matches wins;
within a kind, the rule listed last wins):

1. a glob on the qualified parameter name, ``"blocks.*.mlp.fc2.weight"``;
2. a module class, ``nn.Conv2d`` (``isinstance``);
3. a predicate on the module, ``lambda m: getattr(m, "special_init", False)``;
4. a role: ``"head"``, ``"residual_out"``, ``"embedding"``, ``"bias"``, ``"norm"``, ``"weight"``;
   when a parameter has several roles (a tied embedding that is also the head), the rule of its
   most specific role wins, in that order.

Module-class and predicate rules apply to the module's weights, not its biases (a bias follows
the ``"bias"`` role or a name glob). A rule's value is a scheme name, a ``(name, kwargs)`` pair (``kwargs`` may set ``gain``), the
string ``"keep"``, or a callable ``fn(tensor, generator)`` that fills the tensor in place.
A rule that matches no parameter warns.

The package, one module per step: :mod:`~initlab.planning.rules` (rule keys and precedence),
:mod:`~initlab.planning.policy` (the model-level defaults), :mod:`~initlab.planning.decide` (one
parameter's decision), :mod:`~initlab.planning.types` (:class:`PlanEntry`, :class:`Plan`),
:mod:`~initlab.planning.drawing` (one entry's values), :mod:`~initlab.planning.apply` (the prepare
and write phases), :mod:`~initlab.planning.parametrized` (weight and spectral norm after the draw),
:mod:`~initlab.planning.calibrate` (the measured head of :func:`init`) and
:mod:`~initlab.planning.planner` (:func:`plan`, :func:`init`).
"""

from __future__ import annotations

from .drawing import draw as draw
from .planner import init, plan
from .policy import (
    DEEP_PLAIN_DEPTH,
    DEEP_PLAIN_HEAD_GAIN,
    EXPANDING_ACTIVATIONS,
    HEAD_GAIN,
    IDENTITY_CHAIN_ACTIVATIONS,
    NORMALIZED_GAIN,
    RESCALED_TIED_GAIN,
    TIED_HEAD_GAIN,
)
from .rules import ROLES
from .rules import RuleValue as RuleValue
from .types import NORMALIZED as NORMALIZED
from .types import RESIDUAL_INNER as RESIDUAL_INNER
from .types import RESIDUAL_LAYER_SCALED as RESIDUAL_LAYER_SCALED
from .types import RESIDUAL_SCALED as RESIDUAL_SCALED
from .types import RESIDUAL_ZEROED as RESIDUAL_ZEROED
from .types import UNSCALED_QUERY as UNSCALED_QUERY
from .types import Plan, PlanEntry

__all__ = [
    "DEEP_PLAIN_DEPTH",
    "DEEP_PLAIN_HEAD_GAIN",
    "EXPANDING_ACTIVATIONS",
    "HEAD_GAIN",
    "IDENTITY_CHAIN_ACTIVATIONS",
    "NORMALIZED_GAIN",
    "RESCALED_TIED_GAIN",
    "ROLES",
    "TIED_HEAD_GAIN",
    "Plan",
    "PlanEntry",
    "init",
    "plan",
]
