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
                    initial loss starts within ~0.01 of ``log(classes)``
tied head           a table that is also the input embedding: N(0, (0.15 / sqrt(d))^2)
                    (``TIED_HEAD_GAIN``; ``head_scale`` replaces 0.15)
summed embeddings   tables whose outputs the model adds (tokens, positions, segments; from
                    ``Graph.embedding_sums``) share one std: the tied table's, else 1
residual branch     with normalization layers: the last weight layer at gain x :math:`L^{-1/2}`
                    (``L`` branches); without any: the last weight layer 0 and the branch's
                    other weight layers x :math:`L^{-1/(2m-2)}` (Fixup's rule, no scalars);
                    ``residual_scale=False``: the plain gain
deep plain chain    ``DEEP_PLAIN_DEPTH`` = 10 or more weight layers, no norm, no branch: ZerO
                    (semi-orthogonal where a layer widens), head at gain 1
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import inspect
import json
import math
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import materialize, rng, shard
from .connectivity import Fans, is_fused_qkv
from .connectivity import fans as module_fans
from .errors import InitlabError
from .gains import gain as activation_gain
from .graph import Graph, Layer, trace
from .materialize import MetaState
from .placement import check_placement
from .schemes import SCHEMES, get_scheme

__all__ = [
    "DEEP_PLAIN_DEPTH",
    "HEAD_GAIN",
    "ROLES",
    "TIED_HEAD_GAIN",
    "Plan",
    "PlanEntry",
    "init",
    "plan",
]

ROLES = ("head", "residual_out", "embedding", "bias", "norm", "weight", "other")
_ROLE_ORDER = {r: i for i, r in enumerate(ROLES)}
RESIDUAL_SCALED = "default x L^-1/2 (residual_scale)"
"""The ``source`` of a residual branch end whose gain :func:`plan` scaled by ``L^-1/2``."""
RESIDUAL_ZEROED = "default: branch end at 0, no normalization (residual_scale)"
"""The ``source`` of a residual branch end :func:`plan` zeroed (a model without normalization)."""
RESIDUAL_INNER = "default x L^-1/(2m-2), no normalization (residual_scale)"
"""The ``source`` of a branch's inner weight layer scaled by Fixup's rule."""
RuleValue = str | tuple[str, Mapping[str, Any]] | Callable[..., Any]


@dataclass(frozen=True)
class PlanEntry:
    """The decision for one parameter.

    Attributes:
        name: qualified parameter name (the first one, for tied parameters).
        shape: its shape.
        module: the owning module's qualified name; ``module_type`` its class name.
        role: the primary role; ``roles`` all of them.
        activation: the traced activation after the layer (``None``: linear).
        fan_in, fan_out, chunks: the fans used (``None`` when the scheme needs none).
        receptive_field: kernel taps per channel pair (1 for dense layers); with the fans it
            tells structured schemes how many groups a grouped convolution stacks.
        scheme: the scheme's registry name, ``"keep"``, or ``"custom"`` for a callable rule.
        kwargs: the scheme's options.
        gain: the gain the scheme uses.
        std: the std the scheme aims at (``None`` when not defined).
        source: what decided: ``"default"`` or the rule, e.g. ``"rule 'head'"``.
        tied: other names of the same tensor.
        note: anything worth telling (frozen, unreached, called twice...).
    """

    name: str
    shape: tuple[int, ...]
    module: str
    module_type: str
    role: str
    roles: tuple[str, ...]
    activation: str | None
    fan_in: int | None
    fan_out: int | None
    chunks: int
    scheme: str
    kwargs: Mapping[str, Any]
    gain: float
    std: float | None
    source: str = "default"
    tied: tuple[str, ...] = ()
    note: str = ""
    fn: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    receptive_field: int = 1

    @property
    def fans(self) -> Fans | None:
        """The fans as a :class:`~initlab.Fans`, when the entry has them."""
        if self.fan_in is None or self.fan_out is None:
            return None
        return Fans(self.fan_in, self.fan_out, self.receptive_field, self.chunks)

    def draw(self, tensor: torch.Tensor, seed: int) -> torch.Tensor:
        """Write this entry's values into ``tensor`` (see :func:`draw`)."""
        return draw(self, tensor, seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fn"}
        d["shape"], d["roles"], d["tied"] = list(self.shape), list(self.roles), list(self.tied)
        d["kwargs"] = {k: _jsonable(v) for k, v in self.kwargs.items()}
        return d


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


class Plan:
    """The per-parameter decisions for one model. Iterate it for :class:`PlanEntry` values."""

    def __init__(self, model: nn.Module, graph: Graph, entries: dict[str, PlanEntry], seed: int,
                 scheme: str, device: torch.device | None = None) -> None:  # fmt: skip
        self.model = model
        self.graph = graph
        self.entries = entries
        self.seed = seed
        self.scheme = scheme
        self.device = device

    def __iter__(self) -> Iterator[PlanEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PlanEntry:
        if name not in self.entries:
            from .errors import closest

            hint = closest(name, self.entries)
            raise KeyError(
                f"no parameter {name!r} in the plan" + (f"; did you mean {hint!r}?" if hint else "")
            )
        return self.entries[name]

    def replace(self, name: str, **changes: Any) -> Plan:
        """A new plan with one entry changed (``scheme``, ``gain``, ``kwargs``...); std recomputed."""
        entry = dataclasses.replace(self[name], **changes)
        if entry.scheme not in ("keep", "custom"):
            entry = dataclasses.replace(entry, std=_expected_std(entry))
        return Plan(self.model, self.graph, {**self.entries, name: entry}, self.seed, self.scheme,
                    self.device)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: seed, scheme, the graph's findings and every entry."""
        L, m = self.graph.residual_depth
        return {
            "seed": self.seed,
            "scheme": self.scheme,
            "model": type(self.model).__name__,
            "residual": {"branches": L, "layers_per_branch": m},
            "unreached": list(self.graph.unreached),
            "entries": [e.to_dict() for e in self],
        }

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def __str__(self) -> str:
        header = ("parameter", "shape", "module", "role", "act", "fan_in", "fan_out", "chunks",
                  "scheme", "gain", "std")  # fmt: skip
        rows = [header]
        for e in self:
            rows.append((
                e.name + (" (tied)" if e.tied else ""), "x".join(map(str, e.shape)) or "scalar",
                e.module_type, e.role, (e.activation or "-") if e.role != "bias" else "-",
                _fan_text(e.fan_in), _fan_text(e.fan_out), str(e.chunks),
                e.scheme + _kw_text(e.kwargs), f"{e.gain:.4g}" if _uses_gain(e) else "-",
                f"{e.std:.4g}" if e.std is not None else "-",
            ))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"  {e.name}: {e.note}" for e in self if e.note]
        L, m = self.graph.residual_depth
        foot = [f"seed {self.seed}; {len(self)} parameters; residual branches L={L}, m={m}"]
        scaled = [e for e in self if e.source == RESIDUAL_SCALED]
        if scaled:
            foot.append(f"{len(scaled)} residual branch ends at gain x L^-1/2 = {L**-0.5:.4g} "
                        "(residual_scale=False for the plain gain)")  # fmt: skip
        zeroed = [e for e in self if e.source == RESIDUAL_ZEROED]
        if zeroed:
            foot.append(f"no normalization: {len(zeroed)} residual branch ends at 0, the branches' "
                        "other weight layers x L^-1/(2m-2), Fixup's rule (residual_scale=False "
                        "for the plain gain)")  # fmt: skip
        return "\n".join(lines + foot + (["notes:", *notes] if notes else []))

    __repr__ = __str__

    def apply(self, *, transactional: bool = True, meta_state: MetaState | None = None) -> Plan:
        """Draw every parameter in place (materializing meta tensors); transactional.

        Everything that can fail runs before a weight changes, so on any error the model is as
        it was, without a copy of its weights: the extra memory is a scratch copy of each
        parameter whose draw runs more than an elementwise fill (a rule callable, orthogonal,
        identity...), none for elementwise schemes. ``transactional=False`` skips those copies
        and draws such parameters in place (an error may then leave them half-written).

        On a meta-device model, buffers and the parameters the plan keeps get the values the
        model built on ``device`` would have (:mod:`initlab.materialize`: the model's own init
        code, torch's resets, or ``meta_state``, a state dict or ``fn(name, meta_tensor)``);
        what has no source is named in an error raised before anything is allocated.
        DTensor parameters (FSDP2) draw only their local shard.
        """
        _apply(self, transactional, meta_state)
        return self


def _fan_text(fan: int | None) -> str:
    return "-" if fan is None else str(fan)


def _uses_gain(e: PlanEntry) -> bool:
    return e.scheme == "custom" or (e.scheme in SCHEMES and SCHEMES[e.scheme].uses_gain)


def _kw_text(kwargs: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k != "gain"}
    if not shown:
        return ""
    return (
        "("
        + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
        )
        + ")"
    )


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class _Rule:
    kind: int  # 0 name, 1 class, 2 predicate, 3 role
    key: Any
    value: RuleValue
    label: str
    index: int


def _parse_rules(rules: Mapping[Any, RuleValue] | None) -> list[_Rule]:
    parsed = []
    for i, (key, value) in enumerate((rules or {}).items()):
        if isinstance(key, str) and key in ROLES:
            parsed.append(_Rule(3, key, value, f"rule {key!r}", i))
        elif isinstance(key, str):
            parsed.append(_Rule(0, key, value, f"rule {key!r}", i))
        elif isinstance(key, type) and issubclass(key, nn.Module):
            parsed.append(_Rule(1, key, value, f"rule {key.__name__}", i))
        elif callable(key):
            label = getattr(key, "__name__", "predicate")
            parsed.append(_Rule(2, key, value, f"rule {label}", i))
        else:
            raise InitlabError(
                f"rule key {key!r} is not a parameter-name glob, a module class, a predicate or a "
                f"role ({', '.join(ROLES)})"
            )
        _check_value(parsed[-1])
    return parsed


def _check_value(rule: _Rule) -> None:
    v = rule.value
    if callable(v) and not isinstance(v, str):
        return
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], Mapping):
        name = v[0]
    elif isinstance(v, str):
        name = v
    else:
        raise InitlabError(
            f"{rule.label}: value {v!r} is not a scheme name, a (name, kwargs) pair, 'keep' or a callable"
        )
    if name != "keep":
        get_scheme(name)


def _matches(
    rule: _Rule, names: tuple[str, ...], module: nn.Module, roles: tuple[str, ...]
) -> bool:
    if rule.kind == 0:
        return any(fnmatch.fnmatchcase(n, rule.key) for n in names)
    if rule.kind in (1, 2) and roles == ("bias",):
        return False  # module rules are for weights; biases follow the 'bias' role or a name
    if rule.kind == 1:
        return isinstance(module, rule.key)
    if rule.kind == 2:
        try:
            return bool(rule.key(module))
        except Exception as exc:
            raise InitlabError(
                f"{rule.label} raised {type(exc).__name__}: {exc} on {type(module).__name__}"
            ) from exc
    return rule.key in roles


def _pick(rules: list[_Rule], names: tuple[str, ...], module: nn.Module, roles: tuple[str, ...],
          used: set[int]) -> _Rule | None:  # fmt: skip
    hits = [r for r in rules if _matches(r, names, module, roles)]
    for r in hits:
        used.add(r.index)
    if not hits:
        return None
    best = min(r.kind for r in hits)
    hits = [r for r in hits if r.kind == best]
    if best == 3:  # role rules: the parameter's most specific role wins (head before weight)
        top = min(_ROLE_ORDER[r.key] for r in hits)
        hits = [r for r in hits if _ROLE_ORDER[r.key] == top]
    return hits[-1]


# ---------------------------------------------------------------------------------------------
# deciding


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


def _expected_std(e: PlanEntry) -> float | None:
    if e.scheme in ("keep", "custom"):
        return None
    scheme = SCHEMES[e.scheme]
    kw = {k: v for k, v in e.kwargs.items() if k != "gain"}
    try:
        return scheme.expected_std(e.shape, e.fans, e.gain, **kw)
    except (InitlabError, TypeError):
        return None


def _param_fans(model: nn.Module, name: str, tensor: torch.Tensor) -> Fans | None:
    if tensor.dim() < 2:
        return None
    prefix, _, local = name.rpartition(".")
    owner = model.get_submodule(prefix) if prefix else model
    chunks = None
    if is_fused_qkv(prefix) and tensor.dim() == 2:
        rows, cols = tensor.shape if isinstance(owner, nn.Linear) else tensor.shape[::-1]
        if rows == 3 * cols:  # a fused q/k/v projection: three square matrices
            chunks = 3
    try:
        return module_fans(owner, local, chunks=chunks)
    except InitlabError:
        return None


def plan(
    model: nn.Module,
    scheme: str = "kaiming_normal",
    *,
    example: Any,
    rules: Mapping[Any, RuleValue] | None = None,
    seed: int = 0,
    head_scale: float | None = None,
    residual_scale: bool = True,
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
        include_frozen: also plan parameters with ``requires_grad=False``.
        preset: a model family's recipe (:data:`initlab.presets.PRESETS`, e.g. ``"gpt2"``); its
            rules rank below every rule in ``rules``, so a user's rule always wins.
        preset_options: keyword options of the preset.
        skip_initialized: keep the parameters loaded from a checkpoint (transformers marks them
            ``_is_hf_initialized``; see :func:`initlab.presets.initialized_params`).
        device: where meta parameters are materialized by :meth:`Plan.apply` (default CPU).
        graph: a graph already traced for this model and example (skips the trace).
        **options: keyword options of the default scheme (e.g. ``mode="fan_out"``).

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> p = plan(net, example=torch.randn(2, 4))
    >>> [(e.name, e.role, e.scheme, round(e.gain, 3)) for e in p]  # doctest: +NORMALIZE_WHITESPACE
    [('0.weight', 'weight', 'kaiming_normal', 1.414), ('0.bias', 'bias', 'zeros', 1.0),
     ('2.weight', 'head', 'kaiming_normal', 0.1), ('2.bias', 'bias', 'zeros', 1.0)]
    """
    check_placement(model, example, who="initlab.plan", needs_values=False)
    default = get_scheme(scheme)
    _check_options(default.name, options)
    parsed = _parse_rules(rules)
    graph = graph if graph is not None else trace(model, example)
    fallback: list[_Rule] = []
    loaded: set[str] = set()
    if preset is not None or skip_initialized:
        from .presets import initialized_params, preset_rules

        if preset is not None:
            fallback = _parse_rules(preset_rules(preset, model, graph, **(preset_options or {})))
        if skip_initialized:
            loaded = set(initialized_params(model))
    policy = _policy(model, graph, head_scale, residual_scale)
    used: set[int] = set()
    tied: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(name)
    entries: dict[str, PlanEntry] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        names = tuple(tied[id(p)])
        entries[name] = _decide(model, graph, name, p, names, default.name, options, parsed, used,
                                policy, include_frozen, fallback, loaded)  # fmt: skip
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
    return Plan(model, graph, entries, seed, default.name, dev)


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
        )


def _plan_keywords() -> str:
    """:func:`plan`'s keyword arguments, read from its signature so the message cannot go stale."""
    params = inspect.signature(plan).parameters.values()
    return ", ".join(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


HEAD_GAIN = 0.1
"""The default gain of an output head of its own. Its logits start with std ``0.1 * rms(h)``
(``h`` the head's input), so the initial loss is ``log(classes) + 0.005 E[h^2]`` nats: within
0.05 of the uniform guess unless the features' mean square exceeds 10 (timm's ViTs and
makemore start the head at zero or at 0.01 for the same reason)."""

TIED_HEAD_GAIN = 0.15
"""The default gain of a table that is both the input embedding and the output head: drawn at
``0.15 / sqrt(d)``, its logits after a final norm have variance 0.0225, so the initial loss
starts about 0.011 nats above ``log(vocab)``; the embeddings summed with it (positions,
segments) take the same scale, so tokens carry their share of the input (GPT-2 draws both at
0.02, which is 0.16 / sqrt(d) at d = 64 and 0.55 / sqrt(d) at d = 768)."""

DEEP_PLAIN_DEPTH = 10
"""A chain of at least this many weight layers, with no normalization and no residual branch,
is initialized to be isometric, whatever its activation: ZerO (Zhao et al. 2022) where a layer
keeps or narrows the width, a random semi-orthogonal map where it widens, and the head at gain 1
(a small head starves the layers below it of gradient under SGD). Kaiming with the traced gain
is chaotic for tanh (gain 5/3, Poole et al. 2016) and loses the signal of ReLU chains from
depth 30 on; measured on digits (SGD lr 0.01, 3 epochs, 2 seeds, Acc_1): ReLU depth 10 0.92 /
0.91 against Kaiming's 0.63 / 0.76, tanh depth 30 0.93 / 0.94 against 0.89, depth 50 0.94 /
0.94; tanh depth 10 0.93 / 0.91 against Kaiming's 0.95 / 0.96."""


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


def _policy(model: nn.Module, graph: Graph, head_scale: float | None,
            residual_scale: bool) -> _Policy:  # fmt: skip
    """The model-level decisions, from the traced graph, in three pure steps.

    1. Residual branches (``L`` of them, ``m`` weight layers each). With normalization layers:
       each branch's last weight layer at gain x :math:`L^{-1/2}`. Without any (nothing bounds
       the stream or the updates): the last weight layer at zero and the branch's other weight
       layers at gain x :math:`L^{-1/(2m-2)}`, Fixup's rule (Zhang et al. 2019) without its
       scalars; that is the init that trains the bench's 20-block residual MLP at lr 0.1.
    2. A plain chain (no branch, no norm) of :data:`DEEP_PLAIN_DEPTH` weight layers or more:
       isometric, ZerO (Zhao et al. 2022), head at gain 1.
    3. Embeddings whose outputs are summed start at one scale (:func:`_embedding_groups`).
    """
    normed = any(la.kind == "norm" and la.calls > 0 for la in graph.layers.values())
    tied_gain = TIED_HEAD_GAIN if head_scale is None else head_scale
    ends: dict[str, float] = {}
    inner: dict[str, float] = {}
    L = len(graph.branches)
    if residual_scale and L:
        for b in graph.branches:
            if b.last_weight is None:
                continue
            if normed:
                ends[b.last_weight] = L**-0.5
                continue
            ends[b.last_weight] = 0.0
            factor = 1.0 if b.m < 2 else float(L) ** (-1.0 / (2 * b.m - 2))
            for n in b.weight_layers:
                if n != b.last_weight:
                    inner[n] = factor
    depth = sum(la.weight_depth for la in graph.layers.values() if la.calls > 0)
    deep = not normed and L == 0 and depth >= DEEP_PLAIN_DEPTH
    head_gain = (1.0 if deep else HEAD_GAIN) if head_scale is None else head_scale
    stds = {}
    for group in _embedding_groups(graph):
        widths = [_embedding_width(graph.layers[n]) for n in group]
        d = max(widths)
        tied = any(_is_tied_head(graph, graph.layers[n]) for n in group)
        for n in group:
            stds[n] = tied_gain / math.sqrt(d) if tied else 1.0
    return _Policy(head_gain, tied_gain, normed, ends, inner, deep, stds)


def _embedding_width(layer: Layer) -> int:
    w = getattr(layer.module, "weight", None)
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


def _decide(model: nn.Module, graph: Graph, name: str, p: torch.Tensor, names: tuple[str, ...],
            default: str, options: Mapping[str, Any], rules: list[_Rule], used: set[int],
            policy: _Policy, include_frozen: bool, fallback: list[_Rule],
            loaded: set[str]) -> PlanEntry:  # fmt: skip
    layers = [graph.layer_of(n) for n in names]
    layer = next((la for la in layers if la is not None), None)
    prefix = name.rpartition(".")[0]
    module = model.get_submodule(prefix) if prefix else model
    local = name[len(layer.name) + 1 :] if layer is not None and layer.name else name
    head_tied = any(la is not None and "head" in la.roles for la in layers)
    roles_set: list[str] = []
    for n, la in zip(names, layers, strict=True):
        loc = n[len(la.name) + 1 :] if la is not None and la.name else n
        for r in _roles_of(loc, p, la, module, head_tied):
            if r not in roles_set:
                roles_set.append(r)
    roles = tuple(sorted(roles_set, key=_ROLE_ORDER.__getitem__))
    role = roles[0]
    activation = layer.activation if layer is not None else None
    fans = _param_fans(model, name, p)
    notes = []
    if layer is not None and layer.calls == 0:
        notes.append("never reached by the example: planned without its activation")
    if layer is not None and len(layer.conflicts) > 1:
        notes.append(
            f"followed by different activations across calls {layer.conflicts}; used the first"
        )
    # 1. the default decision, 2. what the model's structure changes, 3. rules, 4. what is kept
    scheme, kwargs, g = _default_for(role, roles, local, p, layer, default, options, activation,
                                     policy, fans)  # fmt: skip
    scheme, kwargs, g, source = _structural(scheme, kwargs, g, role, roles, layer, policy)
    fn = None
    rule = _pick(rules, names, module, roles, used) or _pick(fallback, names, module, roles, set())
    if rule is not None:
        source = rule.label
        scheme, kwargs, fn, g = _rule_decision(rule, p, activation, role, policy.head_gain, layer)
    else:
        why = _deliberate(p, layer, roles, local, scheme)
        if why:
            scheme, kwargs, g, source = "keep", {}, 1.0, "kept"
            notes.append(why)
    if loaded.intersection(names):
        scheme, kwargs, fn, source = "keep", {}, None, "loaded"
        notes.append("loaded from a checkpoint: kept (skip_initialized=True)")
    elif not p.requires_grad and not include_frozen:
        scheme, kwargs, fn, source = "keep", {}, None, "frozen"
        notes.append("frozen (requires_grad=False): kept; pass include_frozen=True to initialize")
    elif p.numel() == 0:  # a zero-width layer: no fans, nothing to draw (torch: a no-op)
        scheme, kwargs, fn, source = "keep", {}, None, "empty"
        notes.append("zero elements (a zero-width layer): nothing to initialize")
    needs = scheme not in ("keep", "custom") and SCHEMES[scheme].uses_fans
    if needs and fans is None:
        raise InitlabError(
            f"{name} (shape {tuple(p.shape)}): scheme {scheme!r} needs fans, which a "
            f"{p.dim()}-D parameter does not have; add a rule such as {{{name!r}: 'zeros'}} or "
            "{'" + role + "': ('normal', {'std': 0.02})}"
        )
    entry = PlanEntry(
        name=name, shape=tuple(p.shape), module=prefix, module_type=type(module).__name__,
        role=role, roles=roles, activation=activation,
        fan_in=fans.fan_in if fans else None, fan_out=fans.fan_out if fans else None,
        chunks=fans.chunks if fans else 1, scheme=scheme, kwargs=dict(kwargs), gain=g, std=None,
        source=source, tied=names[1:], note="; ".join(notes), fn=fn,
        receptive_field=fans.receptive_field if fans else 1,
    )  # fmt: skip
    return dataclasses.replace(entry, std=_expected_std(entry))


def _default_for(role: str, roles: tuple[str, ...], local: str, p: torch.Tensor, layer: Layer | None,
                 default: str, options: Mapping[str, Any], activation: str | None,
                 policy: _Policy, fans: Fans | None) -> tuple[str, Mapping[str, Any], float]:  # fmt: skip
    leaf = local.rsplit(".", 1)[-1]
    if layer is None or role == "other":
        return "keep", {}, 1.0
    if role == "bias":
        return "zeros", {}, 1.0
    if "norm" in roles:
        return ("zeros" if "bias" in leaf else "ones"), {}, 1.0
    if "embedding" in roles:
        if layer.name in policy.embedding_std:  # summed with other embeddings: one scale
            return "normal", {"std": policy.embedding_std[layer.name]}, 1.0
        if "head" in roles:  # a tied output head: keep the initial logits small
            return "normal", {"std": policy.tied_head_gain / math.sqrt(p.shape[-1])}, 1.0
        return "normal", {"std": 1.0}, 1.0
    if leaf.startswith("weight_hh"):
        return "orthogonal", {}, 1.0
    if role == "head":
        return default, options, policy.head_gain
    if isinstance(layer.module, (nn.RNNBase, nn.RNNCellBase)):
        return default, options, 1.0
    if policy.deep_plain and fans is not None:
        # isometric: identity-like where the layer keeps or narrows the width, a random
        # (semi-)orthogonal map where it widens (ZerO's Hadamard would tie the units of a
        # one-channel input)
        return ("orthogonal" if fans.fan_out > fans.fan_in else "ZerO"), {}, 1.0
    return default, options, activation_gain(activation or "linear", layer.activation_param)


def _structural(scheme: str, kwargs: Mapping[str, Any], g: float, role: str,
                roles: tuple[str, ...], layer: Layer | None,
                policy: _Policy) -> tuple[str, Mapping[str, Any], float, str]:  # fmt: skip
    """Residual branches: the end's gain x :math:`L^{-1/2}` (normalized nets) or zero, and the
    other branch layers x :math:`L^{-1/(2m-2)}` (nets without normalization)."""
    if layer is None or scheme == "keep" or role in ("bias", "head") or "norm" in roles:
        return scheme, kwargs, g, "default"
    if role == "residual_out" and layer.name in policy.branch_ends:
        factor = policy.branch_ends[layer.name]
        if factor == 0.0:
            return "zeros", {}, 1.0, RESIDUAL_ZEROED
        return scheme, kwargs, g * factor, RESIDUAL_SCALED
    if role == "weight" and layer.name in policy.branch_inner:
        return scheme, kwargs, g * policy.branch_inner[layer.name], RESIDUAL_INNER
    return scheme, kwargs, g, "default"


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
    v = p.detach()
    leaf = local.rsplit(".", 1)[-1]
    is_bias = "bias" in roles or "bias" in leaf
    if "norm" in roles:
        default: float | None = 0.0 if is_bias else 1.0
    else:
        default = None  # weights and biases of mixing layers: random by default
    first = float(v.reshape(-1)[0])
    constant = bool((v == first).all())
    planned_constant = {"zeros": 0.0, "ones": 1.0}.get(planned)
    chosen_role = is_bias or "norm" in roles or bool({"head", "residual_out"} & set(roles))
    if constant and first != default and first != planned_constant and chosen_role:
        return (f"constructed as the constant {first:.4g} (the module type's default is "
                    f"{'random' if default is None else default}): kept as a deliberate "
                    "choice (a rule overrides)")  # fmt: skip
    if is_bias and "norm" not in roles and not constant:
        w = getattr(layer.module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            bound = 1.0 / math.sqrt(w[0].numel())
            if bool((v.abs() > bound * 1.0001).all()):
                return (f"every element outside the default range +-{bound:.3g}: kept as a "
                        "deliberate choice (a rule overrides)")  # fmt: skip
    return ""


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


# ---------------------------------------------------------------------------------------------
# applying


def _apply(p: Plan, transactional: bool = True, meta_state: MetaState | None = None) -> None:
    """Draw the plan in two phases, so that undo never needs a copy of the model.

    1. *Prepare*: everything that can fail runs before a weight changes: the values of a meta
       model's buffers and kept parameters (:func:`initlab.materialize.resolve`), each
       elementwise scheme's options (its distribution is built), and every draw that runs code
       beyond an elementwise fill (rule callables and structured schemes such as orthogonal), on
       a scratch copy of its parameter that is kept until it is written.
    2. *Write*: elementwise fills straight into the parameters, the prepared values copied in,
       meta tensors swapped for their values. Nothing here allocates more than a block of the
       random stream; an interrupt (Ctrl-C) arriving meanwhile is held until the writing ends
       and delivered then, with the model fully initialized.

    The extra memory is the scratch copies of step 1 (none for elementwise schemes) and one
    block of random numbers. With ``transactional=False`` step 1 prepares only the meta values
    and draws everything in place (structured schemes too).
    """
    model = p.model
    device = p.device or torch.device("cpu")
    drawn = {e.name for e in p if e.scheme != "keep"}
    leftovers = materialize.meta_leftovers(model, drawn)
    values = materialize.resolve(model, leftovers, device, p.seed, meta_state) if leftovers else {}
    ready: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for entry in p:
            if entry.scheme == "keep":
                continue
            tensor = model.get_parameter(entry.name)
            if shard.is_dtensor(tensor):
                continue
            elementwise = entry.fn is None and SCHEMES[entry.scheme].distribution is not None
            if elementwise and (tensor.is_contiguous() or tensor.device.type == "meta"):
                kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
                SCHEMES[entry.scheme].distribution(entry.fans, entry.gain, **kw)  # checks options
                continue
            if tensor.device.type == "meta":
                work = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
            elif transactional:
                work = tensor.detach().clone()  # a rule callable may read the current values
            else:
                continue
            ready[entry.name] = draw(entry, work, p.seed)
    undo: list[Callable[[], None]] = []
    with _held_interrupts() as held:
        try:
            with torch.no_grad():
                for entry in p:
                    if entry.scheme == "keep":
                        continue
                    tensor = model.get_parameter(entry.name)
                    value = ready.pop(entry.name, None)
                    if tensor.device.type == "meta":
                        fresh = value is None
                        if fresh:
                            value = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
                        undo.append(materialize.install(model, entry.name, value))
                        if fresh:
                            draw(entry, model.get_parameter(entry.name).detach(), p.seed)
                    elif value is not None:
                        tensor.detach().copy_(value)
                    else:
                        if transactional and shard.is_dtensor(tensor):
                            saved = tensor.detach().clone()
                            undo.append(lambda t=tensor, s=saved: t.detach().copy_(s))
                        draw(entry, tensor.detach(), p.seed)
                for name, value in values.items():
                    undo.append(materialize.install(model, name, value))
        except BaseException:
            for back in reversed(undo):
                back()
            raise
    if held:
        held[0](signal.SIGINT, None)  # the interrupt that came while writing, now


@contextlib.contextmanager
def _held_interrupts() -> Iterator[list[Callable[..., Any]]]:
    """Hold SIGINT inside the block; yields a list that then holds the handler to call after it.

    Only the main thread receives signals; elsewhere (or where signals cannot be set) this does
    nothing.
    """
    held: list[Callable[..., Any]] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed outside Python: it cannot be put back, leave it
        yield held
        return

    def hold(signum: int, frame: object) -> None:
        if callable(previous) and not held:
            held.append(previous)

    try:
        signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):
        yield held
        return
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def draw(entry: PlanEntry, tensor: torch.Tensor, seed: int) -> torch.Tensor:
    """Write one entry's values into ``tensor`` from the stream ``(seed, entry.name)``."""
    if entry.scheme == "keep":
        return tensor
    if shard.is_dtensor(tensor):
        return shard.draw_local(entry, tensor, seed)
    if entry.fn is not None:
        g = rng.generator(seed, entry.name)
        sig = inspect.signature(entry.fn)
        entry.fn(tensor, g) if len(sig.parameters) >= 2 else entry.fn(tensor)
        return tensor
    scheme = SCHEMES[entry.scheme]
    kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
    if scheme.distribution is not None:
        dist = scheme.distribution(entry.fans, entry.gain, **kw)
        if tensor.is_contiguous():
            return rng.fill_(tensor, dist.sample_, seed, entry.name)
        work = rng.fill_(torch.empty(tensor.shape), dist.sample_, seed, entry.name)
        return tensor.copy_(work)
    # structured schemes compute in float32, or in the parameter's dtype when wider (float64)
    wide = tensor.dtype.is_floating_point and tensor.dtype.itemsize > 4
    work = torch.empty(tensor.shape, dtype=tensor.dtype if wide else torch.float32)
    scheme.apply(
        work, fans=entry.fans, gain=entry.gain, generator=rng.generator(seed, entry.name), **kw
    )
    return tensor.copy_(work)


def init(model: nn.Module, scheme: str = "kaiming_normal", *, example: Any,
         transactional: bool = True, meta_state: MetaState | None = None,
         **kwargs: Any) -> Plan:  # fmt: skip
    """Plan (see :func:`plan`, same arguments) and apply; return the applied :class:`Plan`.

    The model is left exactly as it was if anything fails (see :meth:`Plan.apply` for
    ``transactional`` and ``meta_state``).

    >>> net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    >>> p = init(net, example=torch.randn(8, 64), seed=0)
    >>> round(p["0.weight"].std, 4)  # (5/3) / sqrt(64)
    0.2083
    """
    return plan(model, scheme, example=example, **kwargs).apply(
        transactional=transactional, meta_state=meta_state
    )
