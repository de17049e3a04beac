"""The model-level defaults: head gains, residual branch factors, deep plain chains, summed embeddings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..connectivity import stored_tensor
from ..errors import InitlabError
from ..gains import gain, moment
from ..graph import Graph, Layer

HEAD_GAIN = 0.1
"""The planned gain of an output head of its own. Its logits start with std ``0.1 * rms(h)``
(``h`` the head's input), so the initial loss is ``log(classes) + 0.005 E[h^2]`` nats: within
0.05 of the uniform guess unless the features' mean square exceeds 10 (timm's ViTs and
makemore start the head at zero or at 0.01 for the same reason). :func:`initlab.init` then
measures ``h`` (:mod:`~initlab.planning.calibrate`): in a normalized model the head is redrawn
to logits of variance 0.025, which pooled CNN features of ``E[h^2]`` 0.1-0.7 need to train."""

TIED_HEAD_GAIN = 0.15
"""The default gain of a table that is both the input embedding and the output head: drawn at
``0.15 / sqrt(d)``, its logits after a final norm have variance 0.0225, so the initial loss
starts about 0.011 nats above ``log(vocab)``; the embeddings summed with it (positions,
segments) take the same scale, so tokens carry their share of the input (GPT-2 draws both at
0.02, which is 0.16 / sqrt(d) at d = 64 and 0.55 / sqrt(d) at d = 768)."""

RESCALED_TIED_GAIN = 0.35
"""The gain of a tied table whose head reads its input multiplied by a constant ``c < 1`` (T5
scales the decoder's output by ``d**-0.5`` before the tied head and draws the table at N(0, 1)):
drawn at ``min(1, 0.35 / (c sqrt(d)))``, the logits keep the variance ``0.35**2`` per unit of
``E[h^2]`` while the table itself is as large as the model intends, so the tokens keep their share
of the residual stream and Adam's steps stay small relative to the table. Measured on the models
suite's T5 (seed 0, held-out loss after 200 steps / initial loss, with the attention rule):
0.15 (the plain tied rule) 2.67 / 3.30, 0.25 2.42 / 3.33, 0.3 2.40 / 3.34, 0.4 2.35 / 3.46 (0.17
above ``log(vocab)``, past the tied bound of 0.15); the model's own init 2.36 / 4.60. 0.35 over
3 seeds: 2.398 +- 0.027 / 3.404 (own 2.358 +- 0.002)."""

NORMALIZED_GAIN = 0.25
"""The gain factor of a weight layer whose output only a normalization layer reads
(BatchNorm after a conv, a QK-norm after a projection; :attr:`initlab.graph.Layer.normalized`).

The forward and backward passes do not depend on such a layer's scale; it sets only how far
each optimizer step turns the weights: by ``lr / std`` per element under Adam, by
``lr / ||w||^2`` under SGD (van Laarhoven 2017; Arora et al. 2019). At Kaiming's scale a
depthwise conv (fan-in 9, std 0.47) moves 0.2% per Adam step at lr 1e-3, where the authors of
HF's CNNs draw 0.02. Measured (README's policy table; ``benchmarks/zoo_training.py``, 200 Adam
steps on digits, held-out loss, 2 seeds), gain x 1 -> x 0.25 / own init: HF MobileNetV2 1.239 ->
0.535 / 0.611, RegNet 1.100 -> 0.534 / 0.858, ResNet 1.406 -> 0.993 / 1.312. The cost is SGD's first epoch at a large lr, where the
16x larger relative step unsettles the start (``gradinit-table``'s recipe, lr 0.1, 3 seeds, test
accuracy after epoch 1 / final, x 1 against x 0.25): VGG-BN 0.747 / 0.988 against 0.612 / 0.991,
ResNet-20-BN 0.620 / 0.985 against 0.331 / 0.984 (PyTorch's default: 0.622 and 0.505 after
epoch 1). ``normalized_scale=1`` keeps the plain gain. Before its first batch a BatchNorm divides
by a placeholder variance of 1 in eval mode, so the model evaluated at init shrinks the signal by
this factor at each such layer; train mode (and any trained model) is unaffected."""

DEEP_PLAIN_DEPTH = 10
"""A chain of at least this many weight layers, with no normalization and no residual branch,
is initialized to be isometric where its activation allows it: ZerO (Zhao et al. 2022) where a
layer keeps or narrows the width, a random semi-orthogonal map where it widens. Kaiming with the
traced gain is chaotic for tanh (gain 5/3, Poole et al. 2016) and loses the signal of ReLU chains
from depth 30 on; measured on digits (SGD lr 0.01, 3 epochs, 2 seeds, Acc_1): ReLU depth 10 0.92
/ 0.91 against Kaiming's 0.63 / 0.76, tanh depth 30 0.93 / 0.94 against 0.89, depth 50 0.94 /
0.94; tanh depth 10 0.93 / 0.91 against Kaiming's 0.95 / 0.96. Only activations in
:data:`IDENTITY_CHAIN_ACTIVATIONS` get ZerO; see there."""

IDENTITY_CHAIN_ACTIVATIONS = frozenset(
    {"linear", "relu", "leaky_relu", "relu6", "tanh", "hardtanh", "softsign"}
)
"""Activations ``f`` whose identity chain ``x -> f(I f(I ... x))`` keeps the signal: ``f(0) = 0``
and ``f'(0) = 1``, and either ``f(f(x)) = f(x)`` (the ReLU family, once the input is
non-negative) or odd and contracting only at the tails (tanh: the pre-activations shrink as
``q_l ~ 3 / (2 l)``). Deep chains of these get ZerO. A ZerO chain of any other activation drifts
geometrically (SELU's slope 1.0507 on the positive side grows the signal 1.05x per layer: initial
loss 0.36 above ``log(classes)`` at depth 30, then divergence; GELU's ``x Phi(x)`` halves it), so
those get a random orthogonal map at their traced gain instead (Pennington et al. 2017): on
digits (SGD lr 0.01, 3 epochs, 2 seeds, Acc_1 / best) SELU depth 30 0.87 / 0.93 against Kaiming's
0.79 / 0.85, ELU depth 30 0.95 / 0.97 against 0.87 / 0.94, depth 10 within noise of Kaiming."""

EXPANDING_ACTIVATIONS = frozenset(
    {"gelu", "gelu_tanh", "quick_gelu", "silu", "mish", "hardswish", "tanhshrink"}
)
"""Activations whose variance map has slope above 1 at its fixed point (:mod:`initlab.gains`):
no gain makes unit variance attract, so no init keeps a deep plain chain of them critical. A
chain with one of them keeps the shallow default (the scheme at the traced gain, the head at
:data:`HEAD_GAIN` divided by its input's predicted rms, :func:`_chain_moment`): on digits at
depth 10 Kaiming's Acc_1 is 0.82 (GELU) / 0.76 (SiLU) where an orthogonal map at the same gain
gets 0.69 / 0.67 and ZerO 0.24; at depth 30 none of them trains. An orthogonal map at the
linear-regime gain ``1 / f'(0)`` (2 for SiLU, GELU, hardswish) from a small first layer starts at
``log(classes)`` but diverges from depth 20 (SGD lr 0.01)."""

FADING_ACTIVATIONS = frozenset({"tanh", "softsign"})
"""Odd, bounded activations strictly below the identity away from 0 (``|f(x)| < |x|``): along an
identity chain the pre-activations shrink (tanh: ``q_l ~ 3 / (2 l)``), so a deep chain's
features have a small mean square and its head can start at gain 1 (see
:data:`DEEP_PLAIN_HEAD_GAIN`). Bounded is not enough: hardtanh is the identity on [-1, 1]
(features of mean square 0.66 on standardized inputs: 0.23 nats above ``log(classes)`` at gain
1), sigmoid's outputs have mean 1/2 (0.17 above)."""

DEEP_PLAIN_HEAD_GAIN = 0.3
"""The head gain of a deep plain chain whose activations do not all fade. A small head
starves the layers below it of gradient under SGD (tanh depth 30 on digits, Acc_1 0.78 at gain
0.1 against 0.93 at gain 1), so deep chains start it larger than :data:`HEAD_GAIN`. An isometric
chain's features have mean square at most the input's (half of it after a ReLU), so at gain 0.3
the logits' variance is at most 0.09 and the initial loss at most ~0.04 nats above
``log(classes)`` for standardized inputs; at gain 1 a ReLU chain starts 0.21-0.24 above it (784
-> 512 on random inputs) and a linear one 0.39. The price, on digits (2 seeds, Acc_1 / best),
ReLU depth 30: 0.81 / 0.96 against 0.86 / 0.98 at gain 1; depth 50: 0.67 / 0.93 against 0.92 /
0.96. Chains of fading activations (:data:`FADING_ACTIVATIONS`: tanh, softsign) keep gain 1:
their features' mean square shrinks with depth (initial loss at most 0.046 above at depth 10)."""


@dataclass(frozen=True)
class _Policy:
    """Whole-model facts the per-parameter defaults read; see :func:`_policy`."""

    head_gain: float
    tied_head_gain: float
    normed: bool
    branch_ends: Mapping[str, float] = field(
        default_factory=dict
    )  # last weight layer -> gain factor
    branch_inner: Mapping[str, float] = field(default_factory=dict)  # other branch layers -> factor
    deep_plain: bool = False
    embedding_std: Mapping[str, float] = field(default_factory=dict)  # layer -> its group's std
    layer_scaled: Mapping[str, str] = field(
        default_factory=dict
    )  # branch end at its plain gain -> the layer scale that follows it
    tied_input_scale: float = 1.0  # the constant the tied head's input is multiplied by
    query_gain: Mapping[str, float] = field(default_factory=dict)  # query layer -> gain factor
    rescaled_tied_gain: float = RESCALED_TIED_GAIN  # the tied gain when that constant is < 1
    head_input_rms: float = 1.0  # a plain chain's predicted head-input rms, when above 1
    normalized: Mapping[str, float] = field(default_factory=dict)  # only a norm reads -> factor

    def tied_std(self, d: int) -> float:
        """The std of a tied table of width ``d``: ``tied_head_gain / sqrt(d)``, or, when the
        head's input is scaled by ``c < 1``, ``min(1, gain / (c sqrt(d)))`` (see
        :data:`RESCALED_TIED_GAIN`), so the logits start at the same scale either way."""
        c = self.tied_input_scale
        if not c < 1.0 or c <= 0.0:
            return self.tied_head_gain / math.sqrt(d)
        return min(1.0, self.rescaled_tied_gain / (c * math.sqrt(d)))


def _policy(model: nn.Module, graph: Graph, head_scale: float | None,
            residual_scale: bool, isometric: bool = True,
            normalized_scale: float = NORMALIZED_GAIN) -> _Policy:  # fmt: skip
    """The model-level decisions, from the traced graph, in four pure steps.

    1. Residual branches (``L`` of them, ``m`` weight layers each). With normalization layers:
       each branch's last weight layer at gain x :math:`L^{-1/2}`, unless a learned layer scale
       of at most :math:`L^{-1/2}` multiplies its output (:func:`_layer_scale`): that branch
       is already shrunk, and keeps its plain gain. Without any (nothing bounds
       the stream or the updates): the last weight layer at zero and the branch's other weight
       layers at gain x :math:`L^{-1/(2m-2)}`, Fixup's rule (Zhang et al. 2019) without its
       scalars; that is the init that trains the bench's 20-block residual MLP at lr 0.1.
    2. A plain chain (no branch, no norm, no weight layers side by side: every one on the
       longest path, ``Graph.longest_path``) of :data:`DEEP_PLAIN_DEPTH` weight layers or more:
       isometric, ZerO (Zhao et al. 2022) where the activation allows it
       (:data:`IDENTITY_CHAIN_ACTIVATIONS`), else a random orthogonal map at the traced gain; a
       chain with an :data:`EXPANDING_ACTIVATIONS` member is not treated as deep. The head at
       :func:`_deep_head_gain`; with ``isometric=False`` (the user named a scheme) the named
       scheme is kept and only the head's gain follows this rule.
    3. Embeddings whose outputs are summed start at one scale (:func:`_embedding_groups`);
       a tied table whose head input is scaled down is drawn larger (:meth:`_Policy.tied_std`).
    4. Attention without ``1/sqrt(d_k)`` (:func:`_query_gains`): the query at gain x
       ``1 / (factor sqrt(d_k))``.
    """
    normed = any(la.kind == "norm" and la.calls > 0 for la in graph.layers.values())
    tied_gain = TIED_HEAD_GAIN if head_scale is None else head_scale
    ends: dict[str, float] = {}
    inner: dict[str, float] = {}
    scaled: dict[str, str] = {}
    L = len(graph.branches)
    if residual_scale and L:
        for b in graph.branches:
            if b.last_weight is None:
                continue
            if normed:
                scale = _layer_scale(model, graph, graph.layers[b.last_weight], L**-0.5)
                if scale is not None:
                    scaled[b.last_weight] = scale
                else:
                    ends[b.last_weight] = L**-0.5
                continue
            ends[b.last_weight] = 0.0
            factor = 1.0 if b.m < 2 else float(L) ** (-1.0 / (2 * b.m - 2))
            for n in b.weight_layers:
                if n != b.last_weight:
                    inner[n] = factor
    depth = sum(la.weight_depth for la in graph.layers.values() if la.calls > 0)
    chain = graph.longest_path >= depth  # no weight layers side by side
    deep = (not normed and L == 0 and chain and depth >= DEEP_PLAIN_DEPTH
            and not _chain_activations(graph) & EXPANDING_ACTIVATIONS)  # fmt: skip
    head_gain = (
        (_deep_head_gain(graph) if deep else HEAD_GAIN) if head_scale is None else head_scale
    )
    rms = 1.0
    if head_scale is None and isometric and not normed and L == 0 and chain and not deep:
        m = _chain_moment(graph)
        rms = math.sqrt(m) if m > 1.0 + 1e-6 else 1.0  # ReLU chains: 1 up to rounding
        head_gain /= rms
    scales = [la.input_scale for la in graph.heads if math.isfinite(la.input_scale)]
    base = _Policy(head_gain, tied_gain, normed, ends, inner, deep and isometric,
                   tied_input_scale=min(scales, default=1.0), query_gain=_query_gains(graph),
                   rescaled_tied_gain=RESCALED_TIED_GAIN if head_scale is None else head_scale,
                   layer_scaled=scaled, head_input_rms=rms,
                   normalized={n: normalized_scale for n, la in graph.layers.items()
                               if la.normalized and la.calls > 0 and "head" not in la.roles
                               and normalized_scale != 1.0})  # fmt: skip
    stds = {}
    for group in _embedding_groups(graph):
        widths = [_embedding_width(graph.layers[n]) for n in group]
        d = max(widths)
        tied = any(_is_tied_head(graph, graph.layers[n]) for n in group)
        for n in group:
            stds[n] = base.tied_std(d) if tied else 1.0
    return replace(base, embedding_std=stds)


def _layer_scale(model: nn.Module, graph: Graph, layer: Layer, bound: float) -> str | None:
    r"""The learned layer scale that shrinks ``layer``'s output enough on its own, if any.

    ``gamma * layer(x)`` with ``gamma`` a parameter (ConvNeXt's ``layer_scale_parameter``,
    CaiT's layer scale, Touvron et al. 2021) whose every value is at most ``bound``
    (:math:`L^{-1/2}`) in magnitude: the branch already adds at most :math:`L^{-1/2}` of the
    layer's output, and the factor on top would shrink its gradient a further
    :math:`L^{-1/2}` (the gradient of ``gamma`` is proportional to the layer's output). The
    default keeps such a bare parameter as the model built it, so the bound holds at the start.
    A layer-scale module of its own (timm's ``LayerScale``) is itself the branch's last weight
    layer, kept as a deliberate constant, so the layer before it already keeps its plain gain:
    this makes the bare parameter agree with it. Returns its name (``Layer.multiplier``);
    ``None`` for a buffer (a fixed constant), a larger or meta value, or no multiplier.
    """
    name = layer.multiplier
    if name is None:
        return None
    if name in graph.layers:
        params = list(graph.layers[name].module.parameters())
    else:
        try:
            params = [model.get_parameter(name)]
        except AttributeError:  # a buffer
            return None
    if not params or any(p.device.type == "meta" or p.numel() == 0 for p in params):
        return None
    if not all(p.dtype.is_floating_point for p in params):
        return None
    peak = max(float(p.detach().abs().max()) for p in params)
    return name if peak <= bound else None


def _query_gains(graph: Graph) -> dict[str, float]:
    r"""Query layers whose attention scores lack the ``1/sqrt(d_k)`` factor, and the gain factor
    that puts it back: ``1 / (factor sqrt(d_k))`` when the scores were multiplied by ``factor``
    with ``factor sqrt(d_k) > 1`` (Vaswani et al. 2017's scaling; T5 has ``factor`` 1 and draws
    its query at :math:`(d\,d_{kv})^{-1/2}`, the same thing, Raffel et al. 2020). Models that
    scale the scores or the query themselves get nothing."""
    gains = {}
    for la in graph.layers.values():
        if la.attention is None or la.kind != "weight":
            continue
        d_k, factor = la.attention
        excess = factor * math.sqrt(d_k)
        if math.isfinite(excess) and excess > 1.0 + 1e-6:
            gains[la.name] = 1.0 / excess
    return gains


def _chain_activations(graph: Graph) -> set[str]:
    """The traced activations after the weight layers below the head(s)."""
    return {la.activation or "linear" for la in graph.layers.values() if la.calls > 0
            and la.weight_depth > 0 and "head" not in la.roles}  # fmt: skip


def _chain_moment(graph: Graph) -> float:
    r"""The mean-field second moment of the head's input in a plain chain at the default gains.

    Standardized inputs (second moment 1) through each linear or conv layer at the traced gain
    :math:`g_l` and its activation :math:`f_l`: :math:`q_l = g_l^2 m_{l-1}` (the
    pre-activation's second moment), :math:`m_l = \mathbb{E}[f_l(\sqrt{q_l} z)^2]`
    (:func:`initlab.gains.moment`), :math:`m_0 = 1`. The gain makes :math:`q = 1` a fixed point,
    but the first layer starts at :math:`g_1^2` (its input is the data, not an activation's
    output), and for GELU, SiLU, hardswish and the other :data:`EXPANDING_ACTIVATIONS` the fixed
    point repels: the second moment grows with depth (SiLU, width 256: head-input rms 3.9 at
    depth 10, 16 at 20, 106 at 30) and a head at :data:`HEAD_GAIN` starts the loss 0.14 / 0.53 /
    8.1 nats above ``log(classes)``. The head's gain is divided by :math:`\sqrt{m_L}` when it
    is above 1. 1 when a layer in the chain is neither linear nor conv (an RNN, attention) or its
    activation has no known function.
    """
    m = 1.0
    for la in graph.order():
        if la.kind != "weight" or la.calls == 0 or "head" in la.roles:
            continue
        if not isinstance(la.module, (nn.Linear, nn.modules.conv._ConvNd)):
            return 1.0
        act = la.activation or "linear"
        try:
            m = moment(act, gain(act, la.activation_param) ** 2 * m, la.activation_param)
        except (InitlabError, ValueError):
            return 1.0
    return m


def _deep_head_gain(graph: Graph) -> float:
    """1 when every traced activation of the chain fades (:data:`FADING_ACTIVATIONS`), else
    :data:`DEEP_PLAIN_HEAD_GAIN`."""
    return 1.0 if _chain_activations(graph) <= FADING_ACTIVATIONS else DEEP_PLAIN_HEAD_GAIN


def _embedding_width(layer: Layer) -> int:
    w = stored_tensor(layer.module, "weight")
    return int(w.shape[-1]) if isinstance(w, torch.Tensor) and w.dim() == 2 else 0


def _is_tied_head(graph: Graph, layer: Layer) -> bool:
    if "head" in layer.roles:
        return True
    heads = {id(p) for la in graph.heads for p in la.module.parameters()}
    return any(id(p) in heads for p in layer.module.parameters())


def _embedding_groups(graph: Graph) -> list[tuple[str, ...]]:
    """The embedding tables (layers) of each group in ``Graph.embedding_sums`` with two or more.

    Other members of a sum (a patch convolution, a position parameter or buffer) keep their own
    decision: a convolution follows its fans, a bare parameter is kept.
    """
    groups = []
    for members in graph.embedding_sums:
        tables = tuple(
            n for n in members if n in graph.layers and graph.layers[n].kind == "embedding"
        )
        if len(tables) > 1:
            groups.append(tables)
    return groups
