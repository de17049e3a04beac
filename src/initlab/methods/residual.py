r"""Residual-aware initialization: SkipInit / ReZero, Fixup, T-Fixup and ZerO for whole models.

Every method finds the residual branches from one traced forward pass
(:func:`initlab.graph.trace`: each ``skip + branch`` sum, the branch's layers and its last layer),
so it works on models that were not written for it, and decides the weights through
:func:`initlab.plan.plan` (fans, per-parameter seeds, transactions from the core).

=================  ==========================================================================
method              what it does
=================  ==========================================================================
zero-init            ``initlab.init(model, example=x, rules={"residual_out": "zeros"})``: the
                     branch's last layer zero (OpenAI's ``zero_module``); when that layer is a
                     norm, its weight (torchvision's ``zero_init_residual``). No function needed.
:func:`skipinit`     a learnable scalar ``alpha = 0`` multiplies each branch (De & Smith 2020);
                     ``variant="rezero"`` shares one alpha per layer (Bachlechner et al. 2020)
:func:`fixup`        head and branch ends 0, other branch layers He x ``L^(-1/(2m-2))``, scalar
                     biases and multipliers (Zhang, Dauphin & Ma 2019)
:func:`tfixup`       Xavier, embeddings ``N(0, d^-1/2) (9N)^(-1/4)``, v/out/fc1/fc2 of each
                     sub-layer x ``0.67 N_e^(-1/4)`` (encoder) or ``(9 N_d)^(-1/4)`` (decoder),
                     LayerNorm removed (Huang et al. 2020)
:func:`zero_init`    ZerO (Zhao et al. 2022): identity / Hadamard weights, branch ends 0, head 0
=================  ==========================================================================

**Why zero is not a symmetry trap here.** "All weights zero" fails because every unit then
computes the same thing and gets the same gradient. These methods zero only the *last* layer of
each residual branch (and the head): the block ``x + F(x)`` becomes the identity, but the skip
path still carries the (non-zero, unit-specific) signal, and the zeroed layer's gradient
``dL/dW = (dL/dy) h^T`` uses the branch's random hidden activations ``h``, which differ per unit.
So after one step every unit of the zeroed layer has moved differently; the earlier branch
layers get gradients from the second step on. Fixup's scalar multiplier and biases only rescale
and shift whole tensors; they add no symmetry either.

Model changes (documented transformations, all undone on error):

* :func:`skipinit` replaces the module at each branch end (qualified name ``n``) with
  ``initlab.nn.ScalarGate(module, alpha)``: ``n.weight`` becomes ``n.module.weight``, ``n.alpha``
  is new (ReZero: the same parameter under every gate of one layer).
* :func:`fixup` with ``add_scalars=True`` replaces each branch weight layer, the stem layers and the
  head with ``initlab.nn.ScalarAffine``: ``n.module.weight`` plus ``n.bias_in``, ``n.bias_out`` and
  (branch ends) ``n.scale``. With ``norms="remove"`` every normalization becomes
  ``initlab.nn.NoNorm`` (its parameters disappear from the state_dict).
* :func:`tfixup` with ``norms="remove"`` (the paper's setting) replaces every LayerNorm-like layer
  with ``initlab.nn.NoNorm``; an ``nn.TransformerEncoder`` then gets ``use_nested_tensor = False``
  (torch's nested-tensor inference path reads the norm weights directly).

``initlab.nn.unwrap(model)`` folds the scalars back into the layers where that is exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .. import nn as inn
from ..errors import InitlabError, check_choice
from ..graph import Branch, Graph, Layer, is_norm, trace
from ..plan import Plan, plan
from ..transaction import transaction

__all__ = [
    "ResidualResult",
    "fixup",
    "fixup_scale",
    "skipinit",
    "tfixup",
    "tfixup_scales",
    "zero_init",
]

_Q_OR_K = re.compile(r"(^|_)(q|k|wq|wk|query|key|to_q|to_k|q_proj|k_proj|c_q|c_k)$")
_V = re.compile(r"(^|_)(v|wv|value|to_v|v_proj|c_v)$")
_FUSED = re.compile(r"(^|_)(qkv|c_attn|wqkv|query_key_value|in_proj|to_qkv|attn_qkv)$")


@dataclass(frozen=True)
class ResidualResult:
    """What a residual method did.

    Attributes:
        method: ``"skipinit"``, ``"rezero"``, ``"fixup"``, ``"tfixup"`` or ``"zero_init"``.
        plan: the applied :class:`~initlab.plan.Plan` (``None`` for SkipInit, which draws nothing),
            made on the model as it was after norm removal and before any wrapping.
        branches: number of residual branches found (``L``).
        layers_per_branch: their most common weight-layer count (``m``; MHA counts twice).
        factors: parameter name -> the multiplier applied to its standard init.
        zeroed: parameters set to zero by the method's rules (branch ends, head).
        wrapped: qualified module names replaced by a wrapper, with the wrapper's class name.
        removed: qualified names of normalization layers replaced by ``initlab.nn.NoNorm``.
        notes: anything worth knowing (skipped layers, edge cases).
    """

    method: str
    plan: Plan | None
    branches: int
    layers_per_branch: int
    factors: dict[str, float] = field(default_factory=dict)
    zeroed: tuple[str, ...] = ()
    wrapped: dict[str, str] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.method}: L={self.branches} branches, m={self.layers_per_branch}"]
        if self.factors:
            vals = sorted(set(round(v, 6) for v in self.factors.values()))
            lines.append(f"scaled {len(self.factors)} parameters by {vals}")
        if self.zeroed:
            lines.append(f"zeroed {len(self.zeroed)}: {', '.join(self.zeroed[:6])}"
                         + (" ..." if len(self.zeroed) > 6 else ""))  # fmt: skip
        if self.wrapped:
            lines.append(
                f"wrapped {len(self.wrapped)} modules ({', '.join(sorted(set(self.wrapped.values())))})"
            )
        if self.removed:
            lines.append(f"removed {len(self.removed)} norm layers")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# shared pieces


def _swap(model: nn.Module, name: str, new: nn.Module, undo: list[Callable[[], None]]) -> None:
    """Replace the submodule at ``name`` with ``new``; push the undo."""
    if not name:
        raise InitlabError("cannot replace the model itself; wrap it in a container first")
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent._modules[leaf]
    parent._modules[leaf] = new

    def back() -> None:
        parent._modules[leaf] = old

    undo.append(back)


def _run(
    model: nn.Module, body: Callable[[list[Callable[[], None]]], ResidualResult]
) -> ResidualResult:
    """Run ``body`` in a transaction; module swaps it made are undone on error too."""
    undo: list[Callable[[], None]] = []
    with transaction(model):
        try:
            return body(undo)
        except BaseException:
            for back in reversed(undo):
                back()
            raise


def _check_not_wrapped(model: nn.Module, method: str) -> None:
    found = [n for n, m in model.named_modules() if inn.is_wrapper(m)]
    if found:
        raise InitlabError(
            f"{method}: the model already has initlab scalar wrappers ({', '.join(found[:3])}"
            f"{' ...' if len(found) > 3 else ''}); applying a residual method twice would stack "
            "scalars. Call initlab.nn.unwrap(model) first, or build a fresh model"
        )


def _is_scalar_module(module: nn.Module) -> bool:
    """A module whose parameters are all single numbers (Bias, Scale, user scalars)."""
    params = list(module.parameters(recurse=False))
    return bool(params) and all(p.numel() == 1 for p in params)


def _weight_layers(graph: Graph, branch: Branch) -> list[str]:
    """The branch's weight layers, in order, once each, without scalar modules.

    The graph counts any module that owns a parameter as a layer, so a user's ``initlab.nn.Bias``
    would count as a weight layer; Fixup's ``m`` must not count it.
    """
    out: list[str] = []
    for name in branch.weight_layers:
        if name not in out and not _is_scalar_module(graph.layers[name].module):
            out.append(name)
    return out


def _m(graph: Graph, branch: Branch) -> int:
    return sum(graph.layers[n].weight_depth for n in _weight_layers(graph, branch))


def _weight_params(layer: Layer) -> list[str]:
    prefix = f"{layer.name}." if layer.name else ""
    return [prefix + k for k, p in layer.params.items() if p.dim() >= 2]


def _all_params(layer: Layer) -> list[str]:
    prefix = f"{layer.name}." if layer.name else ""
    return [prefix + k for k in layer.params]


def _end_params(layer: Layer) -> list[str]:
    """What zeroing a branch end zeroes: the whole layer, but only the output projection of an
    ``nn.MultiheadAttention`` (zeroing its Q/K/V too would leave the layer with no gradient)."""
    if isinstance(layer.module, nn.MultiheadAttention):
        prefix = f"{layer.name}." if layer.name else ""
        return [prefix + k for k in layer.params if k.startswith("out_proj.")]
    return _all_params(layer)


def _remove_norms(
    model: nn.Module, undo: list[Callable[[], None]], names: Iterable[str] | None = None
) -> tuple[str, ...]:
    if names is None:
        names = [n for n, m in model.named_modules() if n and is_norm(m)]
    removed = []
    for name in names:
        old = model.get_submodule(name)
        _swap(model, name, inn.NoNorm(old), undo)
        removed.append(name)
    if removed:  # torch's nested-tensor encoder path reads norm weights directly: turn it off
        for enc in model.modules():
            if isinstance(enc, nn.TransformerEncoder) and getattr(enc, "use_nested_tensor", False):
                enc.use_nested_tensor = False
                undo.append(lambda e=enc: setattr(e, "use_nested_tensor", True))  # type: ignore[misc]
    return tuple(removed)


def _layer_group(name: str, model: nn.Module) -> str:
    """The 'layer' a branch end belongs to: its deepest proper ancestor kept in a list by index.

    ``blocks.0.attn.proj`` and ``blocks.0.mlp.2`` both belong to ``blocks.0``; ``layers.3.linear2``
    to ``layers.3``. Falls back to the parent module.
    """
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1].isdigit() and i - 1 > 0:
            return ".".join(parts[:i])
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return name.rpartition(".")[0]


def _branches(graph: Graph) -> list[Branch]:
    """Branches with at least one weight layer, one per distinct last layer."""
    seen: set[str] = set()
    out = []
    for b in graph.branches:
        if not _weight_layers(graph, b) or b.last in seen:
            continue
        seen.add(b.last)
        out.append(b)
    return out


# ---------------------------------------------------------------------------------------------
# SkipInit / ReZero


def skipinit(
    model: nn.Module,
    example: Any,
    *,
    alpha: float = 0.0,
    variant: Literal["skipinit", "rezero"] = "skipinit",
    graph: Graph | None = None,
) -> ResidualResult:
    r"""Gate every residual branch with a learnable scalar: :math:`y = x + \alpha F(x)`, :math:`\alpha = 0`.

    SkipInit (De & Smith 2020): one scalar per branch at its end, initialized at 0 (the paper
    allows up to :math:`1/\sqrt{\text{blocks}}`); nothing else changes, normalization layers included.
    ReZero (Bachlechner et al. 2020; ``majumderb/rezero``, ``rztx.py``): one scalar per *layer*,
    shared by its sub-layers (attention and feed-forward); here a layer is the branch end's
    deepest ancestor held in a list (``layers.3`` for ``layers.3.linear2``). The ReZero paper also
    drops LayerNorm; this function does not (remove it yourself, or use :func:`tfixup`'s
    ``norms="remove"`` idea) -- documented deviation.

    The module at each branch's last layer (``Branch.last``; a norm when the branch ends in one)
    is replaced by ``initlab.nn.ScalarGate(module, alpha)``, so its state_dict keys move from
    ``name.*`` to ``name.module.*`` and ``name.alpha`` appears. The branch output is zero at init
    whenever what follows the gated layer maps 0 to 0 (dropout, ReLU, a sum): check with the
    forward if the branch ends in, e.g., a sigmoid.

    Args:
        model: any module with residual sums ``x + F(x)``.
        example: one forward call's input (see :func:`initlab.graph.trace`).
        alpha: the initial gate.
        variant: ``"skipinit"`` (one alpha per branch) or ``"rezero"`` (one per layer).
        graph: a trace of ``model`` to reuse.

    >>> from initlab.bench.models import residual_mlp
    >>> net = residual_mlp(8, 3, blocks=2, width=16)
    >>> r = skipinit(net, torch.randn(4, 8))
    >>> sorted(r.wrapped), type(net.blocks[0].fc2).__name__
    (['blocks.0.fc2', 'blocks.1.fc2'], 'ScalarGate')
    """
    check_choice("variant", variant, ["skipinit", "rezero"])
    _check_not_wrapped(model, "skipinit")

    def body(undo: list[Callable[[], None]]) -> ResidualResult:
        g = graph if graph is not None else trace(model, example)
        branches = _branches(g)
        if not branches:
            raise InitlabError(
                "skipinit: the trace found no residual branch (no 'x + F(x)' with a weight layer "
                f"in F). {g.summary()}"
            )
        shared: dict[str, nn.Parameter] = {}
        wrapped: dict[str, str] = {}
        for b in branches:
            a: float | nn.Parameter = alpha
            module = model.get_submodule(b.last)
            if variant == "rezero":
                key = _layer_group(b.last, model)
                a = shared.setdefault(key, inn._scalar(float(alpha), module))
            _swap(model, b.last, inn.ScalarGate(module, a), undo)
            wrapped[b.last] = "ScalarGate"
        L, m = (
            len(branches),
            max((_m(g, b) for b in branches), key=[_m(g, b) for b in branches].count),
        )
        notes = (
            (f"ReZero: {len(shared)} shared alphas for {L} branches",)
            if variant == "rezero"
            else ()
        )
        return ResidualResult(variant, None, L, m, wrapped=wrapped, notes=notes)

    return _run(model, body)


# ---------------------------------------------------------------------------------------------
# Fixup


def fixup_scale(L: int, m: int) -> float:
    r"""Fixup's multiplier for branch layers: :math:`L^{-1/(2m-2)}`; 1 when ``m == 1``.

    With one weight layer per branch (m = 1) the formula divides by zero; that layer is the
    branch end, which Fixup sets to zero anyway, so nothing is scaled.

    >>> fixup_scale(54, 2), round(fixup_scale(16, 3), 6), fixup_scale(10, 1)
    (0.13608276348795434, 0.5, 1.0)
    """
    if L < 1 or m < 1:
        raise InitlabError(f"fixup_scale needs L >= 1 and m >= 1, got L={L}, m={m}")
    return 1.0 if m == 1 else float(L) ** (-1.0 / (2 * m - 2))


def fixup(
    model: nn.Module,
    example: Any,
    *,
    scheme: str = "kaiming_normal_fan_out",
    seed: int = 0,
    add_scalars: bool = True,
    norms: Literal["keep", "remove"] = "keep",
) -> ResidualResult:
    r"""Fixup (Zhang, Dauphin & Ma, ICLR 2019), for any model with residual branches.

    Following the official code (``hongyi-zhang/Fixup``, ``cifar/models/fixup_resnet_cifar.py``):

    1. the classifier (every ``head`` layer): weight and bias 0;
    2. the last weight layer of each branch: 0; the branch's other weight layers: He normal with
       **fan_out** (:math:`\sigma = g/\sqrt{\text{out}\cdot k^2}`, ``g`` the traced activation's
       gain, :math:`\sqrt 2` for ReLU as in the code) times :math:`L^{-1/(2m-2)}`, with ``L`` the
       number of branches and ``m`` that branch's weight layers (from the graph; ``m = 1``: no
       scaling, see :func:`fixup_scale`); biases 0;
    3. layers outside the branches (the stem, projection shortcuts): ``scheme`` unscaled;
    4. with ``add_scalars``: the scalar biases (0) and multiplier (1) of rule 3, placed as in the
       official block ``conv1(x + b1a) -> relu(. + b1b) -> conv2(. + b2a) -> . * scale + b2b``:
       every branch weight layer ``n`` becomes ``ScalarAffine(module, bias_in=0, bias_out=0)``
       (the branch end also gets ``scale=1``); every weight layer outside the branches except
       the head and the projection shortcuts gets a ``bias_out`` (the code's ``bias1`` after
       the stem); the head gets a ``bias_in`` (the code's ``bias2`` before ``fc``).

    A branch ending in ``nn.MultiheadAttention`` (which counts as two weight layers, Q/K/V in and
    out) has its ``out_proj`` zeroed and its packed ``in_proj_weight`` scaled like any other
    non-final branch layer.

    Deviations from the official code, on purpose: the stem keeps ``scheme`` (the code leaves
    PyTorch's default there); projection shortcuts get no scalar (the code reuses the block's
    ``b1a`` on the downsample input); a layer with several inputs (``nn.MultiheadAttention``) gets
    no ``bias_in``. The official recipe trains every scalar at lr/10: set that in your optimizer
    (the scalars are the parameters named ``*.bias_in``, ``*.bias_out``, ``*.scale``).

    Normalization: Fixup's point is to train without it. ``norms="keep"`` (default) leaves norm
    layers in place (at weight 1, bias 0); ``norms="remove"`` replaces every normalization layer
    with ``initlab.nn.NoNorm`` first. State-dict keys: see the module docstring.

    Args:
        model: a residual network.
        example: one forward call's input.
        scheme: the standard init of the non-zero weights (a scheme name).
        seed: seed of the draws.
        add_scalars: add rule 3's scalars (a model change) or only initialize the weights.
        norms: ``"keep"`` or ``"remove"``.

    >>> from initlab.bench.models import residual_mlp
    >>> net = residual_mlp(8, 3, blocks=4, width=16)
    >>> r = fixup(net, torch.randn(4, 8), add_scalars=False)
    >>> (r.branches, r.layers_per_branch), sorted(set(r.factors.values()))
    ((4, 2), [0.5])
    >>> float(net.blocks[0].fc2.weight.detach().abs().sum()), float(net.head.weight.detach().abs().sum())
    (0.0, 0.0)
    """
    check_choice("norms", norms, ["keep", "remove"])
    if add_scalars:
        _check_not_wrapped(model, "fixup")

    def body(undo: list[Callable[[], None]]) -> ResidualResult:
        removed = _remove_norms(model, undo) if norms == "remove" else ()
        g = trace(model, example)
        branches = _branches(g)
        if not branches:
            raise InitlabError(f"fixup: the trace found no residual branch. {g.summary()}")
        p = plan(model, scheme, example=example, seed=seed, graph=g, residual_scale=False)
        L = len(branches)
        ms = [_m(g, b) for b in branches]
        factors: dict[str, float] = {}
        zeroed: list[str] = []
        notes: list[str] = []
        branch_layers: set[str] = set()
        ends: set[str] = set()
        for b, m in zip(branches, ms, strict=True):
            ws = _weight_layers(g, b)
            branch_layers.update(ws)
            ends.add(ws[-1])
            if m == 1:
                notes.append(
                    f"branch ending at {b.last} has one weight layer (m=1): zeroed, nothing scaled"
                )
            c = fixup_scale(L, m)
            for name in ws:
                end = _end_params(g.layers[name]) if name == ws[-1] else []
                for pname in _weight_params(g.layers[name]):
                    if pname in factors or pname in end or c == 1.0:
                        continue
                    e = p[pname]
                    p = p.replace(pname, gain=e.gain * c)
                    factors[pname] = c
        for name in ends:
            for pname in _end_params(g.layers[name]):
                if pname in p.entries:
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        heads = [la.name for la in g.heads if la.kind == "weight"]
        if not heads:
            notes.append("no classifier head found: rule 1 skipped")
        for name in heads:
            for pname in _all_params(g.layers[name]):
                if pname in p.entries and pname not in zeroed:
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        for mname, mod in model.named_modules():  # user-built scalars: the plan sees 1-D "biases"
            if isinstance(mod, (inn.Scale, inn.Bias)):
                pname = f"{mname}.{'scale' if isinstance(mod, inn.Scale) else 'bias'}"
                if pname in p.entries:
                    one = isinstance(mod, inn.Scale)
                    p = p.replace(pname, scheme="ones" if one else "zeros", kwargs={}, fn=None)
        p.apply()
        wrapped: dict[str, str] = {}
        if add_scalars:
            skips = {n for b in branches for n in b.skip_layers}
            for la in g.order():
                if (
                    la.kind != "weight"
                    or la.calls == 0
                    or _is_scalar_module(la.module)
                    or not la.name
                ):
                    continue
                multi = isinstance(la.module, (nn.MultiheadAttention, nn.Bilinear))
                if la.name in branch_layers:
                    kw: dict[str, float | None] = {
                        "bias_in": None if multi else 0.0,
                        "bias_out": 0.0,
                    }
                    if la.name in ends:
                        kw["scale"] = 1.0
                elif la.name in heads:
                    kw = {"bias_in": None if multi else 0.0}
                elif la.name in skips:
                    continue
                else:
                    kw = {"bias_out": 0.0}
                if all(v is None for v in kw.values()):
                    continue
                _swap(model, la.name, inn.ScalarAffine(la.module, **kw), undo)  # type: ignore[arg-type]
                wrapped[la.name] = "ScalarAffine"
        return ResidualResult("fixup", p, L, max(set(ms), key=ms.count), factors, tuple(zeroed),
                              wrapped, removed, tuple(notes))  # fmt: skip

    return _run(model, body)


# ---------------------------------------------------------------------------------------------
# T-Fixup


def tfixup_scales(encoder_layers: int = 0, decoder_layers: int = 0) -> dict[str, float]:
    r"""T-Fixup's multipliers (Huang et al. 2020; ``layer6ai-labs/T-Fixup``).

    encoder sub-layers :math:`0.67 N_e^{-1/4}`, decoder sub-layers :math:`(9 N_d)^{-1/4}`,
    encoder and decoder token embeddings :math:`(9 N_e)^{-1/4}` and :math:`(9 N_d)^{-1/4}`.

    >>> s = tfixup_scales(6, 6)
    >>> round(s["encoder"], 4), round(s["decoder"], 4), round(s["encoder_embedding"], 4)
    (0.4281, 0.3689, 0.3689)
    """
    out: dict[str, float] = {}
    if encoder_layers:
        out["encoder"] = 0.67 * encoder_layers ** (-0.25)
        out["encoder_embedding"] = (9 * encoder_layers) ** (-0.25)
    if decoder_layers:
        out["decoder"] = (9 * decoder_layers) ** (-0.25)
        out["decoder_embedding"] = (9 * decoder_layers) ** (-0.25)
    return out


def _default_example(model: nn.Module) -> Any:
    """A small input for torch's own transformer classes."""

    def dims(layer: Any) -> tuple[int, bool]:
        attn = layer.self_attn
        return int(attn.embed_dim), bool(attn.batch_first)

    if isinstance(model, nn.TransformerEncoder):
        d, bf = dims(model.layers[0])
        return torch.zeros((2, 3, d) if bf else (3, 2, d))
    if isinstance(model, nn.TransformerEncoderLayer):
        d, bf = dims(model)
        return torch.zeros((2, 3, d) if bf else (3, 2, d))
    if isinstance(model, (nn.TransformerDecoder, nn.TransformerDecoderLayer)):
        d, bf = dims(model.layers[0] if isinstance(model, nn.TransformerDecoder) else model)
        x = torch.zeros((2, 3, d) if bf else (3, 2, d))
        return (x, x.clone())
    if isinstance(model, nn.Transformer):
        d, bf = dims(model.encoder.layers[0])
        x = torch.zeros((2, 3, d) if bf else (3, 2, d))
        return (x, x.clone())
    raise InitlabError(
        f"tfixup: pass example= for {type(model).__name__} (it can be omitted only for "
        "nn.TransformerEncoder/Decoder(Layer) and nn.Transformer)"
    )


def _side(name: str, model: nn.Module, default: str) -> str:
    """'encoder' or 'decoder' for the layer at ``name``: from torch's layer classes on its path."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = model.get_submodule(".".join(parts[:i]))
        if isinstance(mod, nn.TransformerDecoderLayer):
            return "decoder"
        if isinstance(mod, nn.TransformerEncoderLayer):
            return "encoder"
    if isinstance(model, nn.TransformerDecoderLayer):
        return "decoder"
    if isinstance(model, nn.TransformerEncoderLayer):
        return "encoder"
    return default


def _xavier_chunks(gains: tuple[float, ...]) -> Callable[[torch.Tensor, torch.Generator], None]:
    """Xavier-uniform per stacked chunk (packed Q/K/V), each chunk with its own gain."""

    def fill(tensor: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            for chunk, g in zip(tensor.chunk(len(gains), dim=0), gains, strict=True):
                work = torch.empty(chunk.shape, dtype=torch.float32)
                nn.init.xavier_uniform_(work, gain=g, generator=generator)
                chunk.copy_(work)

    return fill


def tfixup(
    model: nn.Module,
    example: Any = None,
    *,
    seed: int = 0,
    norms: Literal["remove", "keep"] = "remove",
    kind: Literal["encoder", "decoder"] = "encoder",
    layers: int | None = None,
    embed_scale: float = 1.0,
) -> ResidualResult:
    r"""T-Fixup (Huang, Perez, Ba & Volkovs, ICML 2020) for transformers built from torch layers.

    Following ``layer6ai-labs/T-Fixup`` (``fairseq/modules/transformer_layer.py``
    ``fixup_initialization`` and ``fairseq/models/transformer.py``):

    * every weight Xavier-uniform with gain 1, biases 0; attention Q and K projections with gain
      :math:`1/\sqrt 2` (fairseq's; for a packed ``in_proj_weight`` that is Xavier on the packed
      ``(3d, d)`` matrix, std :math:`1/\sqrt{2d}`); the V projection with gain 1 (the code undoes
      fairseq's :math:`1/\sqrt 2` with a factor :math:`\sqrt 2`);
    * in each residual sub-layer (found by the trace): V, the attention output projection and
      the feed-forward weights times :math:`0.67 N_e^{-1/4}` in an encoder layer, times
      :math:`(9 N_d)^{-1/4}` in a decoder layer (self- and cross-attention); Q, K and biases are
      not scaled; for a packed ``in_proj_weight`` (or a fused ``qkv`` Linear) only the V chunk;
    * token embeddings :math:`N(0, d^{-1/2})` times :math:`(9N)^{-1/4}` (N: the encoder's layers
      for encoder-side embeddings, the decoder's for ``tgt``/``dec`` ones), *as the first layer
      sees them*: fairseq multiplies the looked-up rows by ``embed_scale`` :math:`= \sqrt d`, so
      the effective std is :math:`(9N)^{-1/4}`. initlab draws the table with std
      :math:`\sqrt d \, d^{-1/2} (9N)^{-1/4} / \text{embed\_scale}`, i.e. :math:`(9N)^{-1/4}`
      for the usual model that feeds its rows unscaled (``embed_scale=1``: GPT-style models) and
      fairseq's own table for ``embed_scale=sqrt(d)``. Drawing fairseq's table into a model
      without the multiplier makes tokens 8x weaker than positions at d = 64; on the char GPT
      benchmark the effective scale lowered the held-out loss from 2.10/2.09 to 2.03/2.02 (lr
      1e-3, seeds 0/1). Positional embeddings (names with ``pos``/``wpe``) are
      :math:`N(0, d^{-1/2})` unscaled, as fairseq's learned ones (added after the multiplier);
    * ``norms="remove"`` (the paper: no LayerNorm, no warmup) replaces every normalization layer
      with ``initlab.nn.NoNorm``; ``"keep"`` leaves them at weight 1, bias 0.

    Encoder or decoder: layers inside ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
    are classified by class; for other blocks (GPT-style, built from ``nn.Linear`` and
    ``nn.MultiheadAttention``) ``kind`` decides. A GPT block has two sub-layers like an encoder
    layer, so ``kind="encoder"`` (the default) is the derivation's match even for a causal
    decoder-only model; ``kind="decoder"`` gives the stronger :math:`(9N)^{-1/4}`. ``N`` is counted
    as the number of distinct layers the branches belong to (``layers=`` overrides it). Inside a
    sub-layer, linears named like ``q``/``k`` (``q_proj``, ``wq``, ``query``...) are Q/K; a Linear
    named ``qkv``/``c_attn``/``in_proj`` or with ``out == 3 * in`` is a fused Q/K/V.

    Deviations: the output head is Xavier (fairseq draws its ``embed_out`` from
    :math:`N(0, d^{-1/2})`); the warmup-free schedule of the paper is up to your optimizer.

    Args:
        model: a transformer; ``nn.TransformerEncoder``/``Decoder``/``nn.Transformer`` need no
            example.
        example: one forward call's input.
        seed: seed of the draws.
        norms: ``"remove"`` or ``"keep"``.
        kind: how to scale sub-layers outside torch's encoder/decoder layer classes.
        layers: override the number of layers ``N`` (for that ``kind``).
        embed_scale: the factor the model multiplies token embeddings by before the first
            layer (1: none, GPT-style; ``sqrt(d)``: fairseq and the original Transformer).

    >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), num_layers=4,
    ...                             enable_nested_tensor=False)
    >>> r = tfixup(enc)
    >>> round(r.factors["layers.0.linear2.weight"], 4), len(r.removed)
    (0.4738, 8)
    """
    check_choice("norms", norms, ["remove", "keep"])
    check_choice("kind", kind, ["encoder", "decoder"])
    if not (embed_scale > 0 and math.isfinite(embed_scale)):
        raise InitlabError(f"tfixup: embed_scale must be a positive number, got {embed_scale}")
    if example is None:
        example = _default_example(model)

    def body(undo: list[Callable[[], None]]) -> ResidualResult:
        removed = _remove_norms(model, undo) if norms == "remove" else ()
        g = trace(model, example)
        branches = _branches(g)
        if not branches:
            raise InitlabError(f"tfixup: the trace found no residual sub-layer. {g.summary()}")
        p = plan(model, "xavier_uniform", example=example, seed=seed, graph=g, residual_scale=False,
                 rules={"weight": ("xavier_uniform", {"gain": 1.0})})  # fmt: skip
        order = {la.name: la.order for la in g.order()}
        reached = sorted((la for la in g.order() if la.order >= 0), key=lambda la: la.order)
        # which layers each sub-layer spans, and its side
        groups: dict[str, set[str]] = {"encoder": set(), "decoder": set()}
        spans: list[tuple[str, list[str]]] = []
        for b in branches:
            first = min(order[n] for n in b.layers)
            last = order[b.last]
            span = [la.name for la in reached if first <= la.order <= last and la.kind == "weight"
                    and not _is_scalar_module(la.module)]  # fmt: skip
            side = _side(b.last, model, kind)
            group = _layer_group(b.last, model)
            # a cross-attention branch's path runs back through the encoder: keep its own layer
            own = [n for n in span if _layer_group(n, model) == group or n == group]
            groups[side].add(group)
            spans.append((side, own or span))
        n_enc = sum(isinstance(m, nn.TransformerEncoderLayer) for m in model.modules()) or len(
            groups["encoder"]
        )
        n_dec = sum(isinstance(m, nn.TransformerDecoderLayer) for m in model.modules()) or len(
            groups["decoder"]
        )
        if layers is not None:
            if layers < 1:
                raise InitlabError(f"tfixup: layers must be >= 1, got {layers}")
            n_enc, n_dec = (layers, n_dec) if kind == "encoder" else (n_enc, layers)
        s = tfixup_scales(n_enc if groups["encoder"] else 0, n_dec if groups["decoder"] else 0)
        factors: dict[str, float] = {}
        inv = 1.0 / math.sqrt(2.0)
        done: set[str] = set()
        for side, span in spans:
            c = s[side]
            for name in span:
                if name in done:
                    continue
                done.add(name)
                la = g.layers[name]
                mod = la.module
                leaf = name.rsplit(".", 1)[-1].lower()
                prefix = f"{name}."
                if isinstance(mod, nn.MultiheadAttention):
                    if mod.in_proj_weight is not None:
                        pn = prefix + "in_proj_weight"
                        p = p.replace(
                            pn, scheme="custom", kwargs={}, fn=_xavier_chunks((inv, inv, c))
                        )
                        factors[pn] = c  # the V chunk
                    else:
                        for k in ("q_proj_weight", "k_proj_weight"):
                            p = p.replace(prefix + k, gain=1.0)
                        p = p.replace(prefix + "v_proj_weight", gain=c)
                        factors[prefix + "v_proj_weight"] = c
                    pn = prefix + "out_proj.weight"
                    p = p.replace(pn, gain=c)
                    factors[pn] = c
                    continue
                if not isinstance(mod, nn.Linear):
                    continue
                pn = prefix + "weight"
                if pn not in p.entries:
                    continue
                if _FUSED.search(leaf) or mod.out_features == 3 * mod.in_features:
                    p = p.replace(pn, scheme="custom", kwargs={}, fn=_xavier_chunks((inv, inv, c)))
                elif _Q_OR_K.search(leaf):
                    p = p.replace(pn, gain=inv)
                    continue
                else:
                    p = p.replace(pn, gain=c)
                factors[pn] = c
        # embeddings
        notes: list[str] = []
        for la in g.order():
            if la.kind != "embedding":
                continue
            for pname, t in la.params.items():
                full = f"{la.name}.{pname}" if la.name else pname
                if full not in p.entries or t.dim() != 2:
                    continue
                d = t.shape[-1]
                low = la.name.lower()
                if "pos" in low or "wpe" in low:
                    p = p.replace(full, scheme="normal", kwargs={"std": d**-0.5}, gain=1.0, fn=None)
                    continue
                side = (
                    "decoder"
                    if ("tgt" in low or "dec" in low or not groups["encoder"])
                    else "encoder"
                )
                key = f"{side}_embedding"
                c = s.get(key, s.get("encoder_embedding", s.get("decoder_embedding", 1.0)))
                std = c / embed_scale  # sqrt(d) * d^-1/2 * c, as the first layer sees it
                p = p.replace(full, scheme="normal", kwargs={"std": std}, gain=1.0, fn=None)
                factors[full] = c
                pad = getattr(la.module, "padding_idx", None)
                if pad is not None:
                    notes.append(
                        f"{la.name}: padding row {pad} is drawn too; zero it if you rely on it"
                    )
        p.apply()
        L = len(branches)
        ms = [_m(g, b) for b in branches]
        notes.insert(
            0, f"N_e={n_enc if groups['encoder'] else 0}, N_d={n_dec if groups['decoder'] else 0}"
        )
        return ResidualResult("tfixup", p, L, max(set(ms), key=ms.count), factors, (), {}, removed,
                              tuple(notes))  # fmt: skip

    return _run(model, body)


# ---------------------------------------------------------------------------------------------
# ZerO


def zero_init(
    model: nn.Module,
    example: Any,
    *,
    head: Literal["zeros", "ZerO"] = "zeros",
    seed: int = 0,
) -> ResidualResult:
    r"""ZerO (Zhao, Schäfer & Anandkumar 2022) for a whole residual network.

    The paper's recipe for residual networks, as in ``jiaweizzhao/ZerO-initialization``:
    every weight matrix is ZerO's deterministic matrix (:func:`initlab.schemes.zero_matrix`:
    identity, partial identity, or a Hadamard block :math:`H_p[:m, :n]/\sqrt p` when it widens;
    a conv gets it at the kernel centre), the last weight layer of each residual branch is 0,
    biases are 0, norms 1/0, and the classifier is 0 (``head="zeros"``, weight and bias, as the
    ResNet code) or ZerO's partial identity (``head="ZerO"``, as the MLP notebook).

    Embeddings keep the plan's default (N(0, 1)); the official ResNet's extra Hadamard skip on the
    stem and its zero-gradient-passing ReLU are architecture changes this function does not make.
    It draws no random numbers (``seed`` names the plan's streams only).

    >>> from initlab.bench.models import residual_mlp
    >>> net = residual_mlp(8, 3, blocks=2, width=16)
    >>> r = zero_init(net, torch.randn(4, 8))
    >>> torch.equal(net.blocks[0].fc1.weight, torch.eye(16)), float(net.blocks[0].fc2.weight.detach().abs().sum())
    (True, 0.0)
    """
    check_choice("head", head, ["zeros", "ZerO"])

    def body(undo: list[Callable[[], None]]) -> ResidualResult:
        g = trace(model, example)
        branches = _branches(g)
        p = plan(
            model, "ZerO", example=example, seed=seed, graph=g, residual_scale=False, head_scale=1.0
        )
        zeroed: list[str] = []
        ends = {_weight_layers(g, b)[-1] for b in branches}
        heads = {la.name for la in g.heads if la.kind == "weight"}
        targets = ends | (heads if head == "zeros" else set())
        for name in sorted(targets, key=lambda n: g.layers[n].order):
            for pname in (_end_params if name in ends else _all_params)(g.layers[name]):
                if pname in p.entries and p[pname].scheme != "keep":
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        p.apply()
        ms = [_m(g, b) for b in branches] or [0]
        notes = () if branches else ("no residual branch found: plain ZerO on every weight",)
        return ResidualResult("zero_init", p, len(branches), max(set(ms), key=ms.count), {},
                              tuple(zeroed), {}, (), notes)  # fmt: skip

    return _run(model, body)
