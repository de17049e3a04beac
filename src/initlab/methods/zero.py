r"""ZerO (Zhao, Schäfer & Anandkumar 2022) for a whole residual network.

Deterministic identity / Hadamard weights (:func:`initlab.schemes.zero_matrix`), the last layer of
each residual branch (from the traced graph) and the head 0.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from ..errors import check_choice
from ..graph import trace
from ..planning import plan
from ..transaction import transaction
from ._branches import (
    ResidualResult,
    all_params,
    branch_depth,
    end_params,
    residual_branches,
    weight_layers,
)

__all__ = ["zerO_init"]


def zerO_init(
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

    >>> import torch
    >>> class Block(nn.Module):  # x + fc2(relu(fc1(x))): one residual branch of two layers
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
    ...     def forward(self, x):
    ...         return x + self.fc2(self.fc1(x).relu())
    >>> net = nn.Sequential(nn.Linear(8, 16), Block(), Block(), nn.Linear(16, 3))
    >>> r = zerO_init(net, torch.randn(4, 8))
    >>> torch.equal(net[1].fc1.weight, torch.eye(16)), float(net[1].fc2.weight.detach().abs().sum())
    (True, 0.0)
    """
    check_choice("head", head, ["zeros", "ZerO"])

    with transaction(model):
        g = trace(model, example)
        branches = residual_branches(g)
        p = plan(
            model, "ZerO", example=example, seed=seed, graph=g, residual_scale=False, head_scale=1.0
        )
        zeroed: list[str] = []
        ends = {weight_layers(g, b)[-1] for b in branches}
        heads = {la.name for la in g.heads if la.kind == "weight"}
        targets = ends | (heads if head == "zeros" else set())
        for name in sorted(targets, key=lambda n: g.layers[n].order):
            for pname in (end_params if name in ends else all_params)(g.layers[name]):
                if pname in p.entries and p[pname].scheme != "keep":
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        p.apply(transactional=False)  # the transaction above is the undo
        ms = [branch_depth(g, b) for b in branches] or [0]
        notes = () if branches else ("no residual branch found: plain ZerO on every weight",)
        return ResidualResult("zerO_init", p, len(branches), max(set(ms), key=ms.count), {},
                              tuple(zeroed), {}, (), notes)  # fmt: skip
