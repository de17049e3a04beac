"""The entry points: :func:`plan` (trace, then decide every parameter) and :func:`init` (plan, apply)."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InitlabError
from ..graph import Graph, trace
from ..materialize import MetaState
from ..placement import check_placement
from ..schemes import SCHEMES, get_scheme
from .calibrate import calibrate_heads
from .decide import _Context, _decide
from .policy import NORMALIZED_GAIN, _policy
from .rules import RuleValue, _parse_rules, _Rule
from .types import Plan, PlanEntry


def plan(
    model: nn.Module,
    scheme: str | None = None,
    *,
    example: Any,
    rules: Mapping[Any, RuleValue] | None = None,
    seed: int = 0,
    head_scale: float | None = None,
    residual_scale: bool = True,
    normalized_scale: float | None = None,
    include_frozen: bool = False,
    preset: str | None = None,
    preset_options: Mapping[str, Any] | None = None,
    skip_initialized: bool = False,
    device: torch.device | str | None = None,
    graph: Graph | None = None,
    **options: Any,
) -> Plan:
    """Decide how to initialize every parameter of ``model``; touch nothing.

    Args:
        model: any ``nn.Module`` (on CPU, GPU or the meta device).
        scheme: the default scheme for weights (a :data:`~initlab.schemes.SCHEMES` name).
            ``None`` (the default): ``kaiming_normal`` with the traced gain, except in a deep
            plain chain (:data:`DEEP_PLAIN_DEPTH` weight layers or more, no normalization, no
            residual branch), which gets an isometric init; a scheme you name is used as named.
        example: the input of one forward call: a tensor, a tuple of args, or a dict of kwargs.
        rules: overrides; see the module docstring.
        seed: the seed every parameter's stream derives from.
        head_scale: the head's gain (``None``: :data:`HEAD_GAIN` for a head of its own,
            :data:`TIED_HEAD_GAIN` for a table shared by the input embedding and the output).
            A tied head draws its table at ``head_scale / sqrt(d)``. Raises when the trace
            found no head to scale.
        residual_scale: with normalization layers in the model, multiply the gain of each
            residual branch's last weight layer by :math:`L^{-1/2}`, ``L`` the number of
            branches the trace found, so that the sum of ``L`` branches keeps the signal's
            variance bounded (:math:`(1 + 1/L)^L < e`; the rule of GPT-2's
            ``1/sqrt(2 n_layer)`` and Hayou et al. 2021's Stable ResNet); without any, zero the
            branch ends and scale the branches' other weight layers by :math:`L^{-1/(2m-2)}`
            (Fixup's rule, Zhang et al. 2019). ``False`` gives every branch the plain scheme.
        normalized_scale: the gain factor of a weight layer whose output only a normalization
            layer reads (a conv before its BatchNorm, a query before a QK-norm): its scale does
            not change the forward pass, only how far each optimizer step turns it (``None``:
            :data:`NORMALIZED_GAIN` with the default scheme, 1 with a scheme you name).
        include_frozen: also plan parameters with ``requires_grad=False``.
        preset: a model family's recipe (:data:`initlab.presets.PRESETS`, e.g. ``"gpt2"``); its
            rules rank below every rule in ``rules``, so a user's rule always wins.
        preset_options: keyword options of the preset.
        skip_initialized: keep the parameters loaded from a checkpoint (transformers marks them
            ``_is_hf_initialized``; see :func:`initlab.presets.initialized_params`).
        device: where meta parameters are materialized by :meth:`Plan.apply` (default CPU).
        graph: a graph already traced for this model and example (skips the trace).
        **options: keyword options of the default scheme (e.g. ``std=0.02`` for ``"normal"``,
            ``mode="fan_out"`` for ``"variance_scaling"``).

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> p = plan(net, example=torch.randn(2, 4))
    >>> [(e.name, e.role, e.scheme, round(e.gain, 3)) for e in p]  # doctest: +NORMALIZE_WHITESPACE
    [('0.weight', 'weight', 'kaiming_normal', 1.414), ('0.bias', 'bias', 'zeros', 1.0),
     ('2.weight', 'head', 'kaiming_normal', 0.1), ('2.bias', 'bias', 'zeros', 1.0)]
    """
    check_placement(model, example, who="initlab.plan", needs_values=False)
    if normalized_scale is None:
        normalized_scale = NORMALIZED_GAIN if scheme is None else 1.0
    elif not (isinstance(normalized_scale, (int, float)) and math.isfinite(normalized_scale)
              and normalized_scale > 0):  # fmt: skip
        raise InitlabError(
            f"normalized_scale must be a positive number, got {normalized_scale!r}; pass 1 for "
            "the plain gain or None for the default"
        )
    default = get_scheme(scheme if scheme is not None else "kaiming_normal")
    _check_options(default.name, options)
    parsed = _parse_rules(rules)
    graph = graph if graph is not None else trace(model, example)
    fallback: list[_Rule] = []
    loaded: set[str] = set()
    if preset is not None or skip_initialized:
        from ..presets import initialized_params, preset_rules

        if preset is not None:
            fallback = _parse_rules(preset_rules(preset, model, graph, **(preset_options or {})))
        if skip_initialized:
            loaded = set(initialized_params(model))
    policy = _policy(model, graph, head_scale, residual_scale, isometric=scheme is None,
                     normalized_scale=normalized_scale)  # fmt: skip
    context = _Context(model, graph, default.name, options, tuple(parsed), tuple(fallback), policy,
                       include_frozen, frozenset(loaded),
                       dict(model.named_modules(remove_duplicate=False)))  # fmt: skip
    used: set[int] = set()  # the indices of the user's rules that matched some parameter
    tied: dict[int, list[str]] = {}
    named = list(model.named_parameters(remove_duplicate=False))
    for name, p in named:
        tied.setdefault(id(p), []).append(name)
    entries: dict[str, PlanEntry] = {}
    seen: set[int] = set()
    for name, p in named:
        if id(p) in seen:
            continue
        seen.add(id(p))
        names = tuple(tied[id(p)])
        entries[name], hits = _decide(context, name, p, names)
        used |= hits
    order = {la.name: i for i, la in enumerate(graph.order())}
    rank = {n: order.get(e.module if e.module in order else _layer_name(graph, n), len(order))
            for n, e in entries.items()}  # fmt: skip
    entries = dict(sorted(entries.items(), key=lambda kv: rank[kv[0]]))  # stable: keeps param order
    for r in parsed:
        if r.index not in used:
            warnings.warn(f"initlab: {r.label} matched no parameter", UserWarning, stacklevel=2)
    if head_scale is not None and not any("head" in e.roles for e in entries.values()):
        raise InitlabError(
            f"head_scale={head_scale} given, but the trace found no output head in "
            f"{type(model).__name__} (no weight layer or tied embedding feeds the output "
            "directly); drop head_scale, or set the output layer with a rule such as "
            "{'out.weight': ('normal', {'std': 0.01})}"
        )
    dev = torch.device(device) if device is not None else None
    return Plan(model, graph, entries, seed, default.name, dev, policy.head_input_rms**2)


def _layer_name(graph: Graph, param: str) -> str:
    layer = graph.layer_of(param)
    return layer.name if layer is not None else ""


def _check_options(scheme: str, options: Mapping[str, Any]) -> None:
    allowed = SCHEMES[scheme].kwargs
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise InitlabError(
            f"unknown option(s) {extra} for plan/init with scheme {scheme!r}; it accepts "
            f"{list(allowed) or 'no options'} (plan's own options: {_plan_keywords()})"
            + _torch_style_hint(scheme, extra)
        )


def _torch_style_hint(scheme: str, extra: list[str]) -> str:
    """What a ``torch.nn.init.kaiming_*_`` habit (``mode``, ``nonlinearity``, ``a``) maps to."""
    if not scheme.startswith("kaiming") or not set(extra) & {"mode", "nonlinearity", "a"}:
        return ""
    return (
        "; initlab's Kaiming takes the gain from each layer's traced activation (no "
        "nonlinearity or a to pass; a rule such as {nn.Conv2d: ('kaiming_normal', {'gain': 1.0})} "
        "sets one) and fan_in from the layer; for fan_out name the scheme "
        "'kaiming_normal_fan_out', or 'variance_scaling' with mode='fan_out'"
    )


def _plan_keywords() -> str:
    """:func:`plan`'s keyword arguments, read from its signature so the message cannot go stale."""
    params = inspect.signature(plan).parameters.values()
    return ", ".join(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def init(model: nn.Module, scheme: str | None = None, *, example: Any,
         transactional: bool = True, meta_state: MetaState | None = None,
         **kwargs: Any) -> Plan:  # fmt: skip
    """Plan (see :func:`plan`, same arguments) and apply; return the applied :class:`Plan`.

    A head the default drew is then sized by one train-mode forward of ``example``
    (:mod:`~initlab.planning.calibrate`; not with ``head_scale``): in a model with normalization
    redrawn so its logits start at variance 0.025, in one without scaled down where its input
    is too large for the planned logit scale; the returned plan says so.

    The model is left exactly as it was if anything fails (see :meth:`Plan.apply` for
    ``transactional`` and ``meta_state``).

    >>> net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    >>> p = init(net, example=torch.randn(8, 64), seed=0)
    >>> round(p["0.weight"].std, 4)  # (5/3) / sqrt(64)
    0.2083
    """
    applied = plan(model, scheme, example=example, **kwargs).apply(
        transactional=transactional, meta_state=meta_state
    )
    if kwargs.get("head_scale") is not None:  # the user's gain for the head: as asked
        return applied
    return calibrate_heads(model, applied, example)
