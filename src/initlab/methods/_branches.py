r"""What the residual methods share: their branches from the graph, their result, their model changes.

Residual-aware initialization (SkipInit / ReZero, Fixup, T-Fixup and ZerO) for whole models. Every
method finds the residual branches from one traced forward pass
(:func:`initlab.graph.trace`: each ``skip + branch`` sum, the branch's layers and its last layer),
so it works on models that were not written for it, and decides the weights through
:func:`initlab.plan` (fans, per-parameter random streams).

==========================  =======================================================================
method                      what it does
==========================  =======================================================================
zero-init                   ``initlab.init(model, example=x, rules={"residual_out": "zeros"})``:
                            the branch's last layer zero (OpenAI's ``zero_module``); when that
                            layer is a norm, its weight (torchvision's ``zero_init_residual``)
:func:`~initlab.skipinit`   a learnable scalar ``alpha = 0`` multiplies each branch (De & Smith
                            2020); ``variant="rezero"`` shares one alpha per layer (Bachlechner
                            et al. 2020)
:func:`~initlab.fixup`      head and branch ends 0, other branch layers He x ``L^(-1/(2m-2))``,
                            scalar biases and multipliers (Zhang, Dauphin & Ma 2019)
:func:`~initlab.tfixup`     Xavier, embeddings ``N(0, d^-1/2) (9N)^(-1/4)``, v/out/fc1/fc2 of each
                            sub-layer x ``0.67 N_e^(-1/4)`` (encoder) or ``(9 N_d)^(-1/4)``
                            (decoder), LayerNorm removed (Huang et al. 2020)
:func:`~initlab.zerO_init`  ZerO (Zhao et al. 2022): identity / Hadamard weights, branch ends 0,
                            head 0
==========================  =======================================================================

**Why zero is not a symmetry trap here.** "All weights zero" fails because every unit then
computes the same thing and gets the same gradient. These methods zero only the *last* layer of
each residual branch (and the head): the block ``x + F(x)`` becomes the identity, but the skip
path still carries the (non-zero, unit-specific) signal, and the zeroed layer's gradient
``dL/dW = (dL/dy) h^T`` uses the branch's random hidden activations ``h``, which differ per unit.
So after one step every unit of the zeroed layer has moved differently; the earlier branch
layers get gradients from the second step on. Fixup's scalar multiplier and biases only rescale
and shift whole tensors; they add no symmetry either.

One file per method: :mod:`~initlab.methods.skipinit`, :mod:`~initlab.methods.fixup`,
:mod:`~initlab.methods.tfixup`, :mod:`~initlab.methods.zero`; this module holds what they share.
Each method runs its whole body in one :func:`initlab.transaction`, which is the only undo: module
swaps, norm removal, the plan's draws and the added scalars all come back out if anything fails.

Model changes (documented transformations, all undone on error):

* :func:`~initlab.skipinit` replaces the module at each branch end (qualified name ``n``) with
  ``initlab.nn.ScalarGate(module, alpha)``: ``n.weight`` becomes ``n.module.weight``, ``n.alpha``
  is new (ReZero: the same parameter under every gate of one layer).
* :func:`~initlab.fixup` with ``add_scalars=True`` replaces each branch weight layer, the stem layers and the
  head with ``initlab.nn.ScalarAffine``: ``n.module.weight`` plus ``n.bias_in``, ``n.bias_out`` and
  (branch ends) ``n.scale``. With ``norms="remove"`` every normalization becomes
  ``initlab.nn.NoNorm`` (its parameters disappear from the state_dict).
* :func:`~initlab.tfixup` with ``norms="remove"`` (the paper's setting) replaces every LayerNorm-like layer
  with ``initlab.nn.NoNorm``; an ``nn.TransformerEncoder`` then gets ``use_nested_tensor = False``
  (torch's nested-tensor inference path reads the norm weights directly).

``initlab.nn.unwrap(model)`` folds the scalars back into the layers where that is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .. import nn as inn
from .. import optim
from ..errors import InitlabError
from ..graph import Branch, Graph, Layer, is_norm
from ..planning import Plan
from ..transaction import ModelState

__all__ = [
    "ResidualResult",
    "all_params",
    "branch_depth",
    "check_not_wrapped",
    "end_params",
    "is_scalar_module",
    "layer_group",
    "remove_norms",
    "replace_module",
    "residual_branches",
    "weight_layers",
    "weight_params",
]


@dataclass(frozen=True)
class ResidualResult:
    """What a residual method did.

    Attributes:
        method: ``"skipinit"``, ``"rezero"``, ``"fixup"``, ``"tfixup"`` or ``"zerO_init"``.
        plan: the applied :class:`~initlab.Plan` (``None`` for SkipInit, which draws nothing),
            made on the model as it was after norm removal and before any wrapping.
        branches: number of residual branches found (``L``).
        layers_per_branch: their most common weight-layer count (``m``; MHA counts twice).
        factors: parameter name -> the multiplier applied to its standard init.
        zeroed: parameters set to zero by the method's rules (branch ends, head).
        wrapped: qualified module names replaced by a wrapper, with the wrapper's class name.
        removed: qualified names of normalization layers replaced by ``initlab.nn.NoNorm``.
        notes: anything worth knowing (skipped layers, edge cases).
        kept: parameters the method left exactly as they were (Fixup: outside the branches).
        model: the model the method changed (for :meth:`param_groups`).
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
    kept: tuple[str, ...] = ()
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def param_groups(
        self, lr: float, *, weight_decay: float = 0.0, scalar_lr_mult: float = 0.1
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups of the official Fixup recipe, for any ``torch.optim`` optimizer.

        As the official training scripts (``hongyi-zhang/Fixup``, ``cifar/cifar_train.py`` and
        ``imagenet/imagenet_train.py``): every parameter whose name contains ``bias`` or ``scale``
        (the last part of the name: Fixup's scalar biases and multipliers, and the layers' own
        biases) trains at
        ``lr * scalar_lr_mult`` (lr/10), the rest at ``lr``; both groups get the same
        ``weight_decay`` (the scripts pass one ``weight_decay`` to SGD, so it reaches the scalars
        too). Frozen parameters are left out.

        >>> import torch
        >>> from initlab import fixup
        >>> class Block(nn.Module):  # x + fc2(relu(fc1(x)))
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
        ...     def forward(self, x):
        ...         return x + self.fc2(self.fc1(x).relu())
        >>> net = nn.Sequential(nn.Linear(8, 16), Block(), Block(), nn.Linear(16, 3))
        >>> groups = fixup(net, torch.randn(4, 8)).param_groups(0.1, weight_decay=1e-4)
        >>> opt = torch.optim.SGD(groups, momentum=0.9)
        >>> [(len(g["params"]), round(g["lr"], 6)) for g in groups]
        [(18, 0.01), (6, 0.1)]
        """
        if self.model is None:
            raise InitlabError(
                f"{self.method}: this result holds no model; param_groups is for fixup's result"
            )
        return optim.param_groups(self.model, lr, weight_decay=weight_decay,
                                  scalar_lr_mult=scalar_lr_mult)  # fmt: skip

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
# the branches, their layers and parameters


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the qualified name ``name`` of ``model``; return the module it replaced.

    No undo of its own: the caller's :func:`initlab.transaction` records every module's children
    and puts the old module back if the method fails later.
    """
    if not name:
        raise InitlabError("cannot replace the model itself; wrap it in a container first")
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent._modules[leaf]
    parent._modules[leaf] = new
    return old  # type: ignore[return-value]


def check_not_wrapped(model: nn.Module, method: str) -> None:
    """Refuse a model that already holds initlab scalar wrappers (the scalars would stack)."""
    found = [n for n, m in model.named_modules() if inn.is_wrapper(m)]
    if found:
        raise InitlabError(
            f"{method}: the model already has initlab scalar wrappers ({', '.join(found[:3])}"
            f"{' ...' if len(found) > 3 else ''}); applying a residual method twice would stack "
            "scalars. Call initlab.nn.unwrap(model) first, or build a fresh model"
        )


def is_scalar_module(module: nn.Module) -> bool:
    """A module whose parameters are all single numbers (Bias, Scale, user scalars)."""
    params = list(module.parameters(recurse=False))
    return bool(params) and all(p.numel() == 1 for p in params)


def weight_layers(graph: Graph, branch: Branch) -> list[str]:
    """The branch's weight layers, in order, once each, without scalar modules.

    The graph counts any module that owns a parameter as a layer, so a user's ``initlab.nn.Bias``
    would count as a weight layer; Fixup's ``m`` must not count it.
    """
    out: list[str] = []
    for name in branch.weight_layers:
        if name not in out and not is_scalar_module(graph.layers[name].module):
            out.append(name)
    return out


def branch_depth(graph: Graph, branch: Branch) -> int:
    """The branch's ``m``: its weight layers, an ``nn.MultiheadAttention`` counting twice."""
    return sum(graph.layers[n].weight_depth for n in weight_layers(graph, branch))


def weight_params(layer: Layer) -> list[str]:
    """Qualified names of the layer's matrices and kernels (``dim >= 2``)."""
    prefix = f"{layer.name}." if layer.name else ""
    return [prefix + k for k, p in layer.params.items() if p.dim() >= 2]


def all_params(layer: Layer) -> list[str]:
    """Qualified names of every parameter the layer owns."""
    prefix = f"{layer.name}." if layer.name else ""
    return [prefix + k for k in layer.params]


def end_params(layer: Layer) -> list[str]:
    """What zeroing a branch end zeroes: the whole layer, but only the output projection of an
    ``nn.MultiheadAttention`` (zeroing its Q/K/V too would leave the layer with no gradient)."""
    if isinstance(layer.module, nn.MultiheadAttention):
        prefix = f"{layer.name}." if layer.name else ""
        return [prefix + k for k in layer.params if k.startswith("out_proj.")]
    return all_params(layer)


def remove_norms(
    model: nn.Module, state: ModelState, names: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Replace every normalization layer (or those at ``names``) with ``initlab.nn.NoNorm``.

    Runs inside ``with transaction(model) as state``: the swaps are undone by the transaction, the
    ``use_nested_tensor`` switch of an ``nn.TransformerEncoder`` through ``state``.
    """
    if names is None:
        names = [n for n, m in model.named_modules() if n and is_norm(m)]
    removed = []
    for name in names:
        old = model.get_submodule(name)
        replace_module(model, name, inn.NoNorm(old))
        removed.append(name)
    if removed:  # torch's nested-tensor encoder path reads norm weights directly: turn it off
        for enc in model.modules():
            if isinstance(enc, nn.TransformerEncoder) and getattr(enc, "use_nested_tensor", False):
                state.set_attribute(enc, "use_nested_tensor", False)
    return tuple(removed)


def layer_group(name: str, model: nn.Module) -> str:
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


def residual_branches(graph: Graph) -> list[Branch]:
    """Branches with at least one weight layer, one per distinct last layer."""
    seen: set[str] = set()
    out = []
    for b in graph.branches:
        if not weight_layers(graph, b) or b.last in seen:
            continue
        seen.add(b.last)
        out.append(b)
    return out
