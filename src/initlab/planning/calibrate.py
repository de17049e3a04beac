"""The one measured step of :func:`initlab.init`: the default head's scale, read from its input.

The head's default gain (:data:`~initlab.planning.policy.HEAD_GAIN`) starts the logits at std
``gain * rms(h)``, ``h`` the head's input: the initial loss is ``log(classes) + gain^2 E[h^2] / 2``
nats. The gain assumes ``E[h^2]`` about 1, and the trace cannot know it. So, once everything is
drawn, one forward of the example in train mode (dropout on, the RNG and the buffers untouched)
measures ``E[h^2]`` at each untied head the default drew:

- **In a model with a normalization layer** the head is redrawn so that its logits' variance,
  ``fan_in std^2 E[h^2]``, is :data:`LOGIT_VARIANCE_BUDGET` (0.025: ``~0.0125`` nats above
  ``log(classes)``), up or down (:func:`_normalized_factor`). A head read straight from a final norm has ``E[h^2] = 1`` and
  rises from gain 0.1 to about 0.16; a CNN's head reads average-pooled ReLU features of
  ``E[h^2]`` 0.1-0.7 on its example, so at gain 0.1 its logits start at std 0.03-0.08 and Adam,
  which moves every weight by about ``lr`` per step, turns them around slowly: 200 Adam steps on
  digits (held-out loss, gain 0.1 / measured / the model's own init; README's models suite, 3
  seeds): Swin 1.768 / 1.617 / 1.888, ConvNeXt 0.371 / 0.351 / 0.427, ResNet-50 0.114 / 0.105 /
  0.118; torchvision-style (2 seeds): ResNeXt 0.487 / 0.324 / 0.479, pre-activation ResNet
  0.130 / 0.095 / 0.093, MobileNetV2 0.323 / 0.185 / 0.362 (a logit variance of 0.01 gave Wide
  ResNet 0.317 against 0.204 at this one, applied after ``init``). Causal LMs do not move
  (Mistral 2.204 / 2.203).
- **Without one**, the head is only scaled down, where nothing bounds its input: max-pooling
  raises the second moment 2-3x per pool (an AlexNet-style net at Kaiming gains: 24 at its head
  on unit Gaussian images, train mode, 0.11 nats above ``log(classes)``), each dropout by
  ``1 / (1 - p)`` through the layers after it, and raw inputs (pixels in [0, 255]) by their
  scale. A head whose input has ``input_keep E[h^2]`` above :data:`MOMENT_BOUND` (times
  :data:`MARGIN`) is scaled down to that bound: the gain times ``sqrt(MOMENT_BOUND /
  (input_keep E[h^2]))``. The head's gain was chosen for features of unit mean square at most
  (an isometric chain's on standardized inputs, see
  :data:`~initlab.planning.policy.DEEP_PLAIN_HEAD_GAIN`); this holds it to that, and keeps the
  depth suite's trade-offs (a deep chain's 0.3, a tanh chain's 1 on fading features) as
  measured there.

What must hold for every untied head is the initial loss: logits of variance ``v`` start
``~0.45 v`` nats above ``log 10`` (``v / 2 (1 - 1 / classes)``), more where dropout and max-pools
leave heavy tails (VGG-11 without BN, its head scaled to the bound at gain 0.3, ``v`` 0.09:
0.037-0.066 nats over seeds and dropout masks, 0.052 on average; the issue's bound is 0.05). So
in a net without normalization a head that is measured above the bound is scaled to the bound
*and* to at most :data:`LOGIT_VARIANCE_BUDGET` of logit variance (``fan_in std^2 E[h^2]``: the
weights as planned, the input as measured in train mode), whichever is smaller; and the margin
holds only while that variance is within the budget (at gain 0.3 a head input at 1.2x the
bound, 0.108, is scaled). The margin keeps the plan of a net whose features sit at the bound (at
gain 0.1 a 25% larger moment moves the loss by ~0.001 nats). There a head whose input is at or
under the bound is never scaled, whatever its gain; the depth suite's chains sit under it
(digits, ReLU ``E[h^2]`` 0.10-0.11 at gain 0.3, tanh 0.02-0.06 at gain 1) and keep their plans.

The head is redrawn from its own stream at the new gain, so the returned plan, saved and applied
again (``initlab init --save``), draws the same values. A model left on the meta device (no
``device=``), or sharded, is not measured: its heads keep the planned gain.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import shard
from ..graph import Graph
from ..graph.tracing import _example_args
from ..hooks import eval_mode, forward_hooks
from ..schemes import SCHEMES
from .types import Plan, PlanEntry

MOMENT_BOUND = 1.0
"""The head input's second moment (dropout right before the head discounted by ``input_keep``,
which the head's gain already includes) the head's gain assumes: the logits' variance is then at
most ``gain^2`` (0.01 at the default 0.1: ~0.005 nats above ``log(classes)``; 0.09 at a deep
plain chain's 0.3: ~0.04)."""

MARGIN = 1.25
"""A head is scaled only when ``input_keep E[h^2]`` exceeds ``MARGIN * MOMENT_BOUND``: a 25%
larger moment moves the initial loss by ~0.001 nats at gain 0.1, and a net whose features sit at
the bound (a linear chain, an MLP at Kaiming gains on standardized inputs) keeps its plan."""

LOGIT_VARIANCE_BUDGET = 0.025
"""The logit variance (train mode, on the example) a head of a normalized net is set to; in a
net without normalization, the most a head scaled by :func:`head_factors` keeps, and up to
which :data:`MARGIN` applies: ``~0.011`` nats above ``log 10`` for Gaussian
logits, room for the heavy tails of dropout and max-pool features under both the issue's 0.05
above ``log(classes)`` and its "own init + 0.02" (a torchvision classifier's own init starts at
``log(classes)``). VGG-11 without BN, own init 2.303: 2.355 uncapped, 2.339 at a budget of 0.06,
2.322 at 0.03, 2.318 at this one. Still 2.5x the logit variance of the default head (gain 0.1)
on unit features. A head at gain 0.1 reaches it only past ``E[h^2] = 2.5``, beyond the margin; at
gain 0.3 past 0.28."""

MAX_HEAD_GAIN = 1.0
"""The most gain :func:`calibrate_heads` raises a head of a normalized net to (features nearly
dead at init would otherwise ask for any gain): a plain layer's."""

HEAD_CALIBRATED = "head calibrated"
"""The note on a head entry whose gain :func:`calibrate_heads` changed."""


def calibrated_heads(plan: Plan) -> list[PlanEntry]:
    """The entries :func:`calibrate_heads` may rescale: untied heads (not an embedding table)
    the default drew at a gain. In a model with a normalization layer each is set to
    :data:`LOGIT_VARIANCE_BUDGET` (:func:`_normalized_factor`); without one, only scaled down
    to the bound its gain assumes (:func:`_factor`). Not a head under a parametrization (weight
    or spectral norm): its weight is its original's direction times a norm the plan derived from
    the draw, so redrawing the original at another gain would leave the layer as it was."""
    return [
        e for e in plan
        if "head" in e.roles and "embedding" not in e.roles and e.source == "default"
        and e.scheme in SCHEMES and SCHEMES[e.scheme].uses_gain and e.std
        and ".parametrizations." not in f".{e.name}"
    ]  # fmt: skip


def head_factors(model: nn.Module, plan: Plan, example: Any) -> dict[str, tuple[float, str]]:
    """The factor for each head of :func:`calibrated_heads` and why, from its input's second
    moment ``E[h^2]`` in one train-mode forward of ``example``. In a model with a normalization
    layer, the factor that starts its logits at :data:`LOGIT_VARIANCE_BUDGET`
    (:func:`_normalized_factor`); without one, a factor below 1 where ``E[h^2]`` exceeds the
    bound its gain assumes (``MOMENT_BOUND * plan.head_moment / input_keep``: the plan's
    mean-field prediction in a plain chain) by more than :data:`MARGIN`, or by anything once the
    logits' variance exceeds the budget (:func:`_factor`). ``{}`` when no head is to be measured,
    the forward fails, or the model is sharded (DTensor parameters)."""
    heads = calibrated_heads(plan)
    if not heads or any(shard.is_dtensor(p) for p in model.parameters()):
        return {}  # a sharded model's forward is collective: every rank would have to run it
    moments = _input_moments(model, [e.module for e in heads], example)
    normed = _normed(plan.graph)
    factors = {}
    for e in heads:
        ms = moments.get(e.module)
        if ms is None or not math.isfinite(ms) or ms <= 0.0:
            continue
        if normed:
            f = _normalized_factor(e, e.fan_in * e.std**2 * ms)
            why = (f"logits set to variance {LOGIT_VARIANCE_BUDGET:g} on the example (train-mode "
                   f"E[h^2] = {ms:.3g} behind the model's normalization)")  # fmt: skip
        else:
            layer = plan.graph.layer_of(e.name)
            keep = layer.input_keep if layer is not None else 1.0
            bound = MOMENT_BOUND * plan.head_moment  # the plan's mean-field prediction, if larger
            f = _factor(keep * ms, bound, e, ms)
            why = f"no normalization bounds its input (train-mode E[h^2] x keep = {keep * ms:.3g})"
        if f is not None and f != 1.0:
            factors[e.name] = (f, why)
    return factors


def _normalized_factor(entry: PlanEntry, logit_variance: float) -> float:
    """The factor that gives a head of a normalized net logits of variance
    :data:`LOGIT_VARIANCE_BUDGET`, ``sqrt(budget / v)``, ``v = fan_in std^2 E[h^2]`` the
    variance the planned std gives them on the example's features (in expectation over the
    draw: fitting the drawn head's own logits instead fits the example, since on random images
    a pooled net's features are nearly one vector and its ``C`` logits ``C`` draws, whose
    spread then sets the gain: the models suite's ViT, so fitted on digits, started 0.07 nats
    above ``log 10`` on random images at seed 3); at most up to gain :data:`MAX_HEAD_GAIN`.

    >>> from types import SimpleNamespace as E
    >>> round(_normalized_factor(E(gain=0.1), 0.0025), 3)  # pooled features, E[h^2] 0.25
    3.162
    >>> _normalized_factor(E(gain=0.1), 1e-9)  # dead features: gain 1
    10.0
    """
    return min(math.sqrt(LOGIT_VARIANCE_BUDGET / logit_variance), MAX_HEAD_GAIN / entry.gain)


def _factor(moment: float, bound: float, entry: PlanEntry, train_moment: float) -> float | None:
    """The factor for a head of a net without normalization whose input has (keep-discounted)
    second moment ``moment``, or ``None`` to keep it: scaled when ``moment`` exceeds ``MARGIN * bound``, or ``bound`` at all
    while its logits' variance ``fan_in std^2 E[h^2]`` (``E[h^2]`` the train-mode
    ``train_moment``) exceeds :data:`LOGIT_VARIANCE_BUDGET`; to the bound, and to the budget if
    that is smaller.

    >>> from types import SimpleNamespace as E
    >>> head = E(fan_in=100, std=0.3 / 10)  # gain 0.3: v = 0.09 E[h^2]
    >>> round(_factor(1.2, 1.0, head, 1.2), 3), _factor(0.9, 1.0, head, 0.9)  # to the budget
    (0.481, None)
    >>> _factor(1.2, 1.0, E(fan_in=100, std=0.1 / 10), 1.2)  # gain 0.1: within the margin
    >>> round(_factor(4.0, 1.0, E(fan_in=100, std=0.1 / 10), 4.0), 3)  # to the bound
    0.5
    """
    if moment <= bound:
        return None
    logit_variance = entry.fan_in * entry.std**2 * train_moment
    if moment <= MARGIN * bound and logit_variance <= LOGIT_VARIANCE_BUDGET:
        return None
    return min(math.sqrt(bound / moment), math.sqrt(LOGIT_VARIANCE_BUDGET / logit_variance))


def calibrate_heads(model: nn.Module, plan: Plan, example: Any) -> Plan:
    """Redraw, in place, each head :func:`head_factors` sizes, at its new gain from its own
    stream; return the plan with those entries' gain and std updated and noted (so the plan,
    saved and applied again, draws exactly these values)."""
    factors = head_factors(model, plan, example)
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, (f, why) in factors.items():
        e = plan[name]
        note = f"{HEAD_CALIBRATED}: {why}: gain x {f:.3g}"
        plan = plan.replace(name, gain=e.gain * f, note="; ".join(filter(None, (e.note, note))))
        with torch.no_grad():
            plan[name].draw(params[name].detach(), plan.seed)
    return plan


def _normed(graph: Graph) -> bool:
    return any(la.kind == "norm" and la.calls > 0 for la in graph.layers.values())


def _input_moments(model: nn.Module, modules: list[str], example: Any) -> dict[str, float]:
    """``E[x^2]`` of the first input of each named module in one train-mode forward of
    ``example``, under ``no_grad``, on copies of the buffers and a forked RNG (the model's
    state, mode and random streams are left as they were); ``{}`` if the forward fails."""
    found: dict[str, float] = {}
    named = dict(model.named_modules())

    def record(module: nn.Module, args: tuple) -> None:
        name = names[id(module)]
        if name not in found and args and isinstance(args[0], torch.Tensor):
            found[name] = float(args[0].detach().float().pow(2).mean())

    names = {id(named[n]): n for n in modules if n in named}
    try:
        args, kwargs = _example_args(example)
        devices = sorted({t.device.index or 0 for t in [*args, *kwargs.values()]
                          if isinstance(t, torch.Tensor) and t.device.type == "cuda"})  # fmt: skip
        state = {**dict(model.named_parameters()),
                 **{n: b.clone() for n, b in model.named_buffers()}}  # fmt: skip
        with (
            forward_hooks([named[n] for n in modules if n in named], pre=record),
            eval_mode(model, train_if=lambda _m: True),  # train mode; every module's own back
            torch.no_grad(),
            torch.random.fork_rng(devices=devices),
        ):
            torch.func.functional_call(model, state, args, kwargs)
    except Exception:  # an example the model cannot run as given: leave the heads as planned
        return {}
    return found
