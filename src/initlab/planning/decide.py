"""One parameter's decision: its roles, the default, what the structure changes, rules, what is kept."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import shard
from ..connectivity import (
    Fans,
    is_fused_qkv,
    parametrized_original,
    stored_tensor,
    weight_norm_hook,
)
from ..connectivity import fans as module_fans
from ..errors import InitlabError
from ..gains import gain as activation_gain
from ..graph import Graph, Layer
from ..schemes import SCHEMES, get_scheme
from .parametrized import PARAMETRIZED
from .policy import IDENTITY_CHAIN_ACTIVATIONS, _Policy
from .rules import _ROLE_ORDER, _matching, _Rule, _winner
from .types import (
    NORMALIZED,
    RESIDUAL_INNER,
    RESIDUAL_LAYER_SCALED,
    RESIDUAL_SCALED,
    RESIDUAL_ZEROED,
    UNSCALED_QUERY,
    PlanEntry,
    _scheme_std,
)


def _roles_of(local: str, tensor: torch.Tensor, layer: Layer | None, module: nn.Module,
              head_tied: bool) -> tuple[str, ...]:  # fmt: skip
    if layer is None:
        return ("other",)
    leaf = local.rsplit(".", 1)[-1]
    if layer.kind == "norm":
        roles = ["norm"]
        if "residual_out" in layer.roles and "bias" not in leaf:
            roles.insert(0, "residual_out")
        return tuple(roles)
    if layer.kind in ("activation", "scalar"):
        return ("other",)
    if leaf.startswith("bias") or tensor.dim() < 2:
        return ("bias",)
    if layer.kind == "embedding":
        return ("head", "embedding") if ("head" in layer.roles or head_tied) else ("embedding",)
    roles = []
    is_output = not isinstance(layer.module, nn.MultiheadAttention) or local.startswith("out_proj")
    recurrent = isinstance(layer.module, (nn.RNNBase, nn.RNNCellBase))
    if "head" in layer.roles and is_output and not recurrent:
        roles.append("head")
    if "residual_out" in layer.roles and is_output and not recurrent:
        roles.append("residual_out")
    roles.append("weight")
    return tuple(roles)


def _param_fans(owner: nn.Module, prefix: str, local: str, tensor: torch.Tensor) -> Fans | None:
    """The fans of parameter ``local`` of module ``owner`` (at ``prefix``: its owning module, or
    the parametrized layer whose ``parametrizations`` hold it)."""
    if tensor.dim() < 2:
        return None
    chunks = None
    if is_fused_qkv(prefix) and tensor.dim() == 2:
        rows, cols = tensor.shape if isinstance(owner, nn.Linear) else tensor.shape[::-1]
        if rows == 3 * cols:  # a fused q/k/v projection: three square matrices
            chunks = 3
    try:
        return module_fans(owner, local, chunks=chunks)
    except InitlabError:
        return None


@dataclass(frozen=True)
class _Context:
    """What every parameter's decision reads: the model, its trace and the call's settings."""

    model: nn.Module
    graph: Graph
    default: str  # the default scheme's registry name
    options: Mapping[str, Any]  # its keyword options
    rules: tuple[_Rule, ...]  # the user's rules
    fallback: tuple[_Rule, ...]  # a preset's rules, below every user rule
    policy: _Policy
    include_frozen: bool
    loaded: frozenset[str]  # parameters read from a checkpoint (skip_initialized)
    modules: Mapping[str, nn.Module] = dataclasses.field(default_factory=dict)
    """Every qualified module name (duplicates included) -> module, read once: a dict lookup
    per parameter instead of ``get_submodule``'s walk (two per parameter)."""

    def module(self, prefix: str) -> nn.Module:
        """The submodule at ``prefix`` (``""``: the model)."""
        found = self.modules.get(prefix)
        return found if found is not None else self.model.get_submodule(prefix)


@dataclass(frozen=True)
class _Site:
    """Where one parameter sits: what its decision reads of the model and the trace."""

    name: str
    names: tuple[str, ...]  # every name of the tensor (tied parameters), ``name`` first
    prefix: str  # the owning module's qualified name
    module: nn.Module
    layer: Layer | None  # the traced layer of the first name that has one
    local: str  # the name inside that layer
    roles: tuple[str, ...]  # most specific first; ``roles[0]`` is the role
    activation: str | None
    fans: Fans | None


def _site(ctx: _Context, name: str, p: torch.Tensor, names: tuple[str, ...]) -> _Site:
    """The parameter's layer, module, roles (the union over its names) and fans."""
    layers = [ctx.graph.layer_of(n) for n in names]
    layer = next((la for la in layers if la is not None), None)
    prefix = name.rpartition(".")[0]
    module = ctx.module(prefix)
    local = name[len(layer.name) + 1 :] if layer is not None and layer.name else name
    if layer is not None and parametrized_original(layer.module, local) is not None:
        prefix, module = layer.name, layer.module  # a parametrization's original: its layer's
    head_tied = any(la is not None and "head" in la.roles for la in layers)
    roles_set: list[str] = []
    for n, la in zip(names, layers, strict=True):
        loc = n[len(la.name) + 1 :] if la is not None and la.name else n
        for r in _roles_of(loc, p, la, module, head_tied):
            if r not in roles_set:
                roles_set.append(r)
    roles = tuple(sorted(roles_set, key=_ROLE_ORDER.__getitem__))
    activation = layer.activation if layer is not None else None
    fans = _param_fans(module, prefix, name[len(prefix) + 1 :] if prefix else name, p)
    return _Site(name, names, prefix, module, layer, local, roles, activation, fans)


def _trace_notes(layer: Layer | None) -> list[str]:
    """What the trace could not settle about the parameter's layer."""
    notes = []
    if layer is not None and layer.calls == 0:
        notes.append("never reached by the example: planned without its activation")
    if layer is not None and "head" in layer.roles and layer.input_keep < 1.0:
        notes.append(
            f"dropout before it keeps {layer.input_keep:g} of its input: head gain x "
            f"sqrt({layer.input_keep:g}), so its logits start at the same scale in train mode"
        )
    if layer is not None and len(layer.conflicts) > 1:
        notes.append(
            f"followed by different activations across calls {layer.conflicts}; used the first"
        )
    return notes


def _kept_anyway(ctx: _Context, p: torch.Tensor, names: tuple[str, ...]) -> tuple[str, str] | None:
    """``(source, note)`` when the parameter is kept whatever was decided (loaded, frozen, empty)."""
    if ctx.loaded.intersection(names):
        return "loaded", "loaded from a checkpoint: kept (skip_initialized=True)"
    if not p.requires_grad and not ctx.include_frozen:
        return (
            "frozen",
            "frozen (requires_grad=False): kept; pass include_frozen=True to initialize",
        )
    if p.numel() == 0:  # a zero-width layer: no fans, nothing to draw (torch: a no-op)
        return "empty", "zero elements (a zero-width layer): nothing to initialize"
    return None


def _decide(
    ctx: _Context, name: str, p: torch.Tensor, names: tuple[str, ...]
) -> tuple[PlanEntry, frozenset[int]]:
    """The entry for parameter ``name`` and the indices of the user's rules that matched it.

    1. the default decision, 2. what the model's structure changes, 3. rules (the user's, then
    the preset's), else values the model's author chose, 4. what is kept whatever was decided.
    """
    site = _site(ctx, name, p, names)
    layer, roles, role, fans = site.layer, site.roles, site.roles[0], site.fans
    notes = _trace_notes(layer)
    original = (parametrized_original(site.module, site.local)
                or weight_norm_hook(site.module, site.local)) if layer is not None else None  # fmt: skip
    if site.roles[0] == "head" and ctx.policy.head_input_rms > 1.0:
        notes.append(
            f"a plain chain: its input's rms is {ctx.policy.head_input_rms:.3g} by the mean-field "
            "recursion at the default gains, so the head's gain is divided by it"
        )
    scheme, kwargs, g = _default_for(role, roles, site.local, p, layer, ctx.default, ctx.options,
                                     site.activation, ctx.policy, fans)  # fmt: skip
    scheme, kwargs, g, source = _structural(scheme, kwargs, g, role, roles, layer, ctx.policy)
    fn = None
    hits = _matching(ctx.rules, names, site.module, roles)
    rule = _winner(hits) or _winner(_matching(ctx.fallback, names, site.module, roles))
    if rule is not None:
        source = rule.label
        scheme, kwargs, fn, g = _rule_decision(rule, p, site.activation, role,
                                               ctx.policy.head_gain, layer)  # fmt: skip
    else:
        why = _deliberate(p, layer, roles, site.local, scheme)
        if why:
            scheme, kwargs, g, source = "keep", {}, 1.0, "kept"
            notes.append(why)
    if original is not None and not original[1] and scheme != "keep" and rule is None:
        scheme, kwargs, fn, g, source = "keep", {}, None, 1.0, PARAMETRIZED
        notes.append(f"set from the value drawn for {original[0]!r} after drawing it, so the "
                     "layer computes that draw (weight norm's g = ||v||)")  # fmt: skip
    kept = _kept_anyway(ctx, p, names)
    if kept is not None:
        scheme, kwargs, fn, (source, note) = "keep", {}, None, kept
        notes.append(note)
    needs = scheme not in ("keep", "custom") and SCHEMES[scheme].uses_fans
    if needs and fans is None:
        raise InitlabError(
            f"{name} (shape {tuple(p.shape)}): scheme {scheme!r} needs fans, which a "
            f"{p.dim()}-D parameter does not have; add a rule such as {{{name!r}: 'zeros'}} or "
            "{'" + role + "': ('normal', {'std': 0.02})}"
        )
    shape, kwargs = tuple(p.shape), dict(kwargs)
    entry = PlanEntry(
        name=name, shape=shape, module=site.prefix, module_type=type(site.module).__name__,
        role=role, roles=roles, activation=site.activation,
        fan_in=fans.fan_in if fans else None, fan_out=fans.fan_out if fans else None,
        chunks=fans.chunks if fans else 1, scheme=scheme, kwargs=kwargs, gain=g,
        std=_scheme_std(scheme, kwargs, shape, fans, g), source=source, tied=names[1:],
        note="; ".join(notes), fn=fn, receptive_field=fans.receptive_field if fans else 1,
    )  # fmt: skip
    return entry, frozenset(r.index for r in hits)


def _default_for(role: str, roles: tuple[str, ...], local: str, p: torch.Tensor, layer: Layer | None,
                 default: str, options: Mapping[str, Any], activation: str | None,
                 policy: _Policy, fans: Fans | None) -> tuple[str, Mapping[str, Any], float]:  # fmt: skip
    leaf = local.rsplit(".", 1)[-1]
    if layer is None or role == "other":
        return "keep", {}, 1.0
    if role == "bias":
        return "zeros", {}, 1.0
    if "norm" in roles:
        if "bias" in leaf or _scale_is_one_plus_weight(layer.module, leaf):
            return "zeros", {}, 1.0
        return "ones", {}, 1.0
    if "embedding" in roles:
        if layer.name in policy.embedding_std:  # summed with other embeddings: one scale
            return "normal", {"std": policy.embedding_std[layer.name]}, 1.0
        if "head" in roles:  # a tied output head: keep the initial logits small
            return "normal", {"std": policy.tied_std(p.shape[-1])}, 1.0
        return "normal", {"std": 1.0}, 1.0
    if leaf.startswith("weight_hh"):
        return "orthogonal", {}, 1.0
    if role == "head":
        return default, options, policy.head_gain * math.sqrt(layer.input_keep)
    if isinstance(layer.module, (nn.RNNBase, nn.RNNCellBase)):
        return default, options, 1.0
    if policy.deep_plain and fans is not None:
        # isometric: identity-like where the layer keeps or narrows the width, a random
        # (semi-)orthogonal map where it widens (ZerO's Hadamard would tie the units of a
        # one-channel input); an activation that drifts along an identity chain gets a random
        # orthogonal map at its traced gain instead (Pennington et al. 2017)
        if (activation or "linear") not in IDENTITY_CHAIN_ACTIVATIONS:
            return "orthogonal", {}, activation_gain(activation or "linear", layer.activation_param)
        return ("orthogonal" if fans.fan_out > fans.fan_in else "ZerO"), {}, 1.0
    return default, options, activation_gain(activation or "linear", layer.activation_param)


def _structural(scheme: str, kwargs: Mapping[str, Any], g: float, role: str,
                roles: tuple[str, ...], layer: Layer | None,
                policy: _Policy) -> tuple[str, Mapping[str, Any], float, str]:  # fmt: skip
    """Residual branches: the end's gain x :math:`L^{-1/2}` (normalized nets; plain where a layer
    scale follows it) or zero, and the other branch layers x :math:`L^{-1/(2m-2)}` (nets without
    normalization)."""
    if layer is None or scheme == "keep" or role in ("bias", "head") or "norm" in roles:
        return scheme, kwargs, g, "default"
    if role in ("weight", "residual_out") and layer.name in policy.normalized:
        return scheme, kwargs, g * policy.normalized[layer.name], NORMALIZED
    if role == "residual_out" and layer.name in policy.layer_scaled:
        return scheme, kwargs, g, RESIDUAL_LAYER_SCALED
    if role == "residual_out" and layer.name in policy.branch_ends:
        factor = policy.branch_ends[layer.name]
        if factor == 0.0:
            return "zeros", {}, 1.0, RESIDUAL_ZEROED
        return scheme, kwargs, g * factor, RESIDUAL_SCALED
    if role == "weight" and layer.name in policy.branch_inner:
        return scheme, kwargs, g * policy.branch_inner[layer.name], RESIDUAL_INNER
    if role == "weight" and layer.name in policy.query_gain:
        return scheme, kwargs, g * policy.query_gain[layer.name], UNSCALED_QUERY
    return scheme, kwargs, g, "default"


_ONE_PLUS: dict[tuple[object, ...], bool] = {}
"""Probe results by class, parameter name, shape and the module's plain settings (its int, float,
bool and str attributes: a class whose offset is a flag, ``add_unit_offset``, is probed per
value)."""


def _scale_is_one_plus_weight(module: nn.Module, leaf: str) -> bool:
    """Whether the norm scales by ``1 + weight`` (Gemma's RMSNorm, Nemotron's ``LayerNorm1P``),
    so that its unit scale is a zero weight, not a one.

    Read by running the module once on a small CPU input with every tensor of its own at zero:
    a ``weight``-scaled norm then outputs zeros, a ``1 + weight`` one the normalized input. Only
    classes outside ``torch.nn`` with a 1-D ``weight`` are probed (once per class, name, shape
    and settings, :data:`_ONE_PLUS`); any failure reads as a plain ``weight`` scale.
    """
    w = module._parameters.get(leaf)
    if type(module).__module__.startswith("torch.") or w is None or w.dim() != 1:
        return False
    settings = tuple(sorted((k, v) for k, v in vars(module).items()
                            if not k.startswith("_") and isinstance(v, (bool, int, float, str))))  # fmt: skip
    key = (type(module), leaf, tuple(w.shape), settings)
    if key not in _ONE_PLUS:
        state = {n: torch.zeros(t.shape, dtype=torch.float32)
                 for n, t in [*module.named_parameters(), *module.named_buffers()]}  # fmt: skip
        x = torch.randn(2, 3, w.shape[0], generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                y = torch.func.functional_call(module, state, (x,))
            one_plus = isinstance(y, torch.Tensor) and bool(y.float().abs().mean() > 0.5)
        except Exception:  # a norm that needs another layout or more than one input
            one_plus = False
        _ONE_PLUS[key] = one_plus
    return _ONE_PLUS[key]


def _deliberate(p: torch.Tensor, layer: Layer | None, roles: tuple[str, ...], local: str,
                planned: str) -> str:  # fmt: skip
    r"""Why ``p``'s current values look chosen by the model's author ("" when they do not).

    A parameter is kept when it is flagged (``_no_reinit``, or transformers'
    ``_is_hf_initialized``, set on tensors read from a checkpoint), or when its values could
    not come from its module type's PyTorch default: a head, branch end, norm or bias that is
    constant with a value other than the default's (a zero classifier, a zero last BatchNorm
    gamma, a bias of -log(classes)), or a bias with every element outside the default's range
    :math:`\pm 1/\sqrt{fan_{in}}` (Mamba's ``dt_proj.bias``, the inverse softplus of a time
    step). Meta and sharded tensors have no values to read: nothing is detected there.
    """
    for flag in ("_no_reinit", "_is_hf_initialized"):
        if getattr(p, flag, False):
            return f"flagged {flag} by the model: kept (a rule overrides)"
    if layer is None or planned == "keep" or p.numel() < 2 or p.device.type == "meta":
        return ""
    if shard.is_dtensor(p) or not p.dtype.is_floating_point:
        return ""
    leaf = local.rsplit(".", 1)[-1]
    is_bias = "bias" in roles or "bias" in leaf
    if "norm" in roles:
        default: float | None = 0.0 if is_bias else 1.0
    else:
        default = None  # weights and biases of mixing layers: random by default
    chosen_role = is_bias or "norm" in roles or bool({"head", "residual_out"} & set(roles))
    if not chosen_role:  # a mixing layer's weight: nothing to read (planning stays cheap)
        return ""
    flat = p.detach().reshape(-1)
    sample = _sample(flat).tolist()  # one read of at most 64 values; the rest only if needed
    first = sample[0]

    def constant() -> bool:
        return all(x == first for x in sample) and bool((flat == first).all())

    planned_constant = {"zeros": 0.0, "ones": 1.0}.get(planned)
    # a constant equal to the default or to the planned value is no choice (a norm's ones, a
    # bias's zeros: most of what is read)
    if first != default and first != planned_constant and constant():
        return (f"constructed as the constant {first:.4g} (the module type's default is "
                    f"{'random' if default is None else default}): kept as a deliberate "
                    "choice (a rule overrides)")  # fmt: skip
    if is_bias and "norm" not in roles and not constant():
        w = stored_tensor(layer.module, "weight")  # no parametrization run
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            bound = 1.0 / math.sqrt(w[0].numel())
            if all(abs(x) > bound * 1.0001 for x in sample) and bool(
                (flat.abs() > bound * 1.0001).all()
            ):
                return (f"every element outside the default range +-{bound:.3g}: kept as a "
                        "deliberate choice (a rule overrides)")  # fmt: skip
    return ""


_SAMPLE = 64  # elements read first by the value checks below


def _sample(flat: torch.Tensor) -> torch.Tensor:
    """At most :data:`_SAMPLE` elements of a flat tensor, evenly strided, the first included: a
    random tensor is told from a constant (or from one outside a range) after 64 reads, not n."""
    step = max(1, flat.numel() // _SAMPLE)
    return flat[::step][:_SAMPLE]


def _rule_decision(rule: _Rule, p: torch.Tensor, activation: str | None, role: str, head_gain: float,
                   layer: Layer | None) -> tuple[str, Mapping[str, Any], Callable[..., Any] | None, float]:  # fmt: skip
    v = rule.value
    base_gain = (
        head_gain
        if role == "head"
        else activation_gain(activation or "linear", layer.activation_param if layer else None)
    )
    if callable(v) and not isinstance(v, str):
        return "custom", {}, v, base_gain
    name, kwargs = (v, {}) if isinstance(v, str) else (v[0], dict(v[1]))
    if name == "keep":
        return "keep", {}, None, 1.0
    name = get_scheme(name).name
    g = float(kwargs.pop("gain", base_gain))
    allowed = SCHEMES[name].kwargs
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise InitlabError(
            f"{rule.label}: scheme {name!r} has no option(s) {extra}; it accepts {list(allowed) or 'none'} and 'gain'"
        )
    return name, kwargs, None, g
