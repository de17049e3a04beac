r"""SkipInit (De & Smith 2020) and ReZero (Bachlechner et al. 2020): gate each residual branch.

``y = x + alpha F(x)`` with a learnable ``alpha = 0``: one per branch (SkipInit) or one per layer
shared by its sub-layers (ReZero). The branches come from the traced graph
(:mod:`initlab.methods._branches`); nothing is drawn.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from .. import nn as inn
from ..errors import InitlabError, check_choice
from ..graph import Graph, trace
from ..transaction import transaction
from ._branches import (
    ResidualResult,
    branch_depth,
    check_not_wrapped,
    layer_group,
    replace_module,
    residual_branches,
)

__all__ = ["skipinit"]


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

    >>> import torch
    >>> class Block(nn.Module):  # x + fc2(relu(fc1(x))): one residual branch of two layers
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
    ...     def forward(self, x):
    ...         return x + self.fc2(self.fc1(x).relu())
    >>> net = nn.Sequential(nn.Linear(8, 16), Block(), Block(), nn.Linear(16, 3))
    >>> r = skipinit(net, torch.randn(4, 8))
    >>> sorted(r.wrapped), type(net[1].fc2).__name__
    (['1.fc2', '2.fc2'], 'ScalarGate')
    """
    check_choice("variant", variant, ["skipinit", "rezero"])
    check_not_wrapped(model, "skipinit")

    with transaction(model):
        g = graph if graph is not None else trace(model, example)
        branches = residual_branches(g)
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
                key = layer_group(b.last, model)
                a = shared.setdefault(key, inn._scalar(float(alpha), module))
            replace_module(model, b.last, inn.ScalarGate(module, a))
            wrapped[b.last] = "ScalarGate"
        L, m = (
            len(branches),
            max(
                (branch_depth(g, b) for b in branches),
                key=[branch_depth(g, b) for b in branches].count,
            ),
        )
        notes = (
            (f"ReZero: {len(shared)} shared alphas for {L} branches",)
            if variant == "rezero"
            else ()
        )
        return ResidualResult(variant, None, L, m, wrapped=wrapped, notes=notes)
