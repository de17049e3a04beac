r"""Fixup (Zhang, Dauphin & Ma, ICLR 2019): train deep residual networks without normalization.

Head and branch ends 0, the other branch layers He x ``L^(-1/(2m-2))``, scalar biases and
multipliers around every branch layer (as the official ``hongyi-zhang/Fixup`` code), and the
optimizer groups of its training scripts (:meth:`ResidualResult.param_groups`).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from .. import nn as inn
from ..errors import InitlabError, check_choice
from ..graph import trace
from ..planning import plan
from ..transaction import transaction
from ._branches import (
    ResidualResult,
    all_params,
    branch_depth,
    check_not_wrapped,
    end_params,
    is_scalar_module,
    remove_norms,
    replace_module,
    residual_branches,
    weight_layers,
    weight_params,
)

__all__ = ["fixup", "fixup_scale"]


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
    outside: Literal["keep", "init"] = "keep",
) -> ResidualResult:
    r"""Fixup (Zhang, Dauphin & Ma, ICLR 2019), for any model with residual branches.

    Following the official code (``hongyi-zhang/Fixup``, ``cifar/models/fixup_resnet_cifar.py``):

    1. the classifier (every ``head`` layer): weight and bias 0;
    2. the last weight layer of each branch: 0; the branch's other weight layers: He normal with
       **fan_out** (:math:`\sigma = g/\sqrt{\text{out}\cdot k^2}`, ``g`` the traced activation's
       gain, :math:`\sqrt 2` for ReLU as in the code) times :math:`L^{-1/(2m-2)}`, with ``L`` the
       number of branches and ``m`` that branch's weight layers (from the graph; ``m = 1``: no
       scaling, see :func:`fixup_scale`); biases 0;
    3. layers outside the branches (the stem, embeddings, norms and biases outside the blocks):
       **kept as they are**, as the official models leave the stem at its existing (PyTorch
       default) init; ``outside="init"`` draws them with ``scheme`` instead (needed for a model
       on the meta device). Projection shortcuts: ``scheme`` unscaled (He normal fan_out, as the
       official ImageNet code's ``downsample`` convolutions);
    4. with ``add_scalars``: the scalar biases (0) and multiplier (1) of rule 3, placed as in the
       official block ``conv1(x + b1a) -> relu(. + b1b) -> conv2(. + b2a) -> . * scale + b2b``:
       every branch weight layer ``n`` becomes ``ScalarAffine(module, bias_in=0, bias_out=0)``
       (the branch end also gets ``scale=1``); every weight layer outside the branches except
       the head and the projection shortcuts gets a ``bias_out`` (the code's ``bias1`` after
       the stem); the head gets a ``bias_in`` (the code's ``bias2`` before ``fc``).

    A branch ending in ``nn.MultiheadAttention`` (which counts as two weight layers, Q/K/V in and
    out) has its ``out_proj`` zeroed and its packed ``in_proj_weight`` scaled like any other
    non-final branch layer.

    Deviations from the official code, on purpose: projection shortcuts get no scalar (the code
    reuses the block's ``b1a`` on the downsample input); a layer with several inputs
    (``nn.MultiheadAttention``) gets no ``bias_in``.

    Training: the official recipe trains the scalar biases and multipliers (and every other
    parameter named ``bias`` or ``scale``) at lr/10; the result's
    :meth:`ResidualResult.param_groups` hands those groups to any optimizer:
    ``torch.optim.SGD(res.param_groups(0.1, weight_decay=1e-4), momentum=0.9)``. With one lr for
    everything, a deep Fixup network can diverge at learning rates the recipe trains at.

    Normalization: Fixup's point is to train without it. ``norms="keep"`` (default) leaves norm
    layers in place (at weight 1, bias 0); ``norms="remove"`` replaces every normalization layer
    with ``initlab.nn.NoNorm`` first. State-dict keys: see the module docstring.

    Args:
        model: a residual network.
        example: one forward call's input.
        scheme: the standard init of the non-zero weights (a scheme name).
        seed: seed of the draws.
        add_scalars: add rule 4's scalars (a model change) or only initialize the weights.
        norms: ``"keep"`` or ``"remove"``.
        outside: ``"keep"`` (default, the official code) or ``"init"``: draw the layers outside
            the branches, except projection shortcuts and the head, with ``scheme``.

    >>> import torch
    >>> class Block(nn.Module):  # x + fc2(relu(fc1(x))): one residual branch of two layers
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
    ...     def forward(self, x):
    ...         return x + self.fc2(self.fc1(x).relu())
    >>> net = nn.Sequential(nn.Linear(8, 16), *(Block() for _ in range(4)), nn.Linear(16, 3))
    >>> r = fixup(net, torch.randn(4, 8), add_scalars=False)
    >>> (r.branches, r.layers_per_branch), sorted(set(r.factors.values()))
    ((4, 2), [0.5])
    >>> float(net[1].fc2.weight.detach().abs().sum()), float(net[-1].weight.detach().abs().sum())
    (0.0, 0.0)
    """
    check_choice("norms", norms, ["keep", "remove"])
    check_choice("outside", outside, ["keep", "init"])
    if add_scalars:
        check_not_wrapped(model, "fixup")

    with transaction(model) as state:
        removed = remove_norms(model, state) if norms == "remove" else ()
        g = trace(model, example)
        branches = residual_branches(g)
        if not branches:
            raise InitlabError(f"fixup: the trace found no residual branch. {g.summary()}")
        p = plan(model, scheme, example=example, seed=seed, graph=g, residual_scale=False)
        L = len(branches)
        ms = [branch_depth(g, b) for b in branches]
        factors: dict[str, float] = {}
        zeroed: list[str] = []
        notes: list[str] = []
        branch_layers: set[str] = set()
        ends: set[str] = set()
        for b, m in zip(branches, ms, strict=True):
            ws = weight_layers(g, b)
            branch_layers.update(ws)
            ends.add(ws[-1])
            if m == 1:
                notes.append(
                    f"branch ending at {b.last} has one weight layer (m=1): zeroed, nothing scaled"
                )
            c = fixup_scale(L, m)
            for name in ws:
                end = end_params(g.layers[name]) if name == ws[-1] else []
                for pname in weight_params(g.layers[name]):
                    if pname in factors or pname in end or c == 1.0:
                        continue
                    e = p[pname]
                    p = p.replace(pname, gain=e.gain * c)
                    factors[pname] = c
        for name in sorted(ends, key=lambda n: g.layers[n].order):  # a set: fix the order
            for pname in end_params(g.layers[name]):
                if pname in p.entries:
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        heads = [la.name for la in g.heads if la.kind == "weight"]
        if not heads:
            notes.append("no classifier head found: rule 1 skipped")
        for name in heads:
            for pname in all_params(g.layers[name]):
                if pname in p.entries and pname not in zeroed:
                    p = p.replace(pname, scheme="zeros", kwargs={}, fn=None)
                    zeroed.append(pname)
        kept: list[str] = []
        if outside == "keep":  # the official models re-initialize only branches and classifier
            skips = {n for b in branches for n in b.skip_layers}
            inside = {n for b in branches for n in b.layers} | branch_layers | skips | set(heads)
            owner = {pn: ln for ln, la in g.layers.items() for pn in all_params(la)}
            for pname, e in list(p.entries.items()):
                if owner.get(pname) not in inside and e.scheme != "keep":
                    p = p.replace(pname, scheme="keep", kwargs={}, fn=None, std=None)
                    kept.append(pname)
            meta = [n for n in kept if model.get_parameter(n).is_meta]
            if meta:
                raise InitlabError(
                    f"fixup keeps the layers outside the residual branches as they are (as the "
                    f"official code), but {meta[0]} is on the meta device and has no values; "
                    "pass outside='init' to draw them with `scheme`"
                )
            if kept:
                notes.append(
                    f"kept {len(kept)} parameters outside the branches as they were "
                    f"({', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}); "
                    "outside='init' draws them"
                )
        for mname, mod in model.named_modules():  # user-built scalars: the plan sees 1-D "biases"
            if isinstance(mod, (inn.Scale, inn.Bias)):
                pname = f"{mname}.{'scale' if isinstance(mod, inn.Scale) else 'bias'}"
                if pname in p.entries:
                    one = isinstance(mod, inn.Scale)
                    p = p.replace(pname, scheme="ones" if one else "zeros", kwargs={}, fn=None)
        p.apply(transactional=False)  # the transaction above is the undo
        wrapped: dict[str, str] = {}
        if add_scalars:
            skips = {n for b in branches for n in b.skip_layers}
            for la in g.order():
                if (
                    la.kind != "weight"
                    or la.calls == 0
                    or is_scalar_module(la.module)
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
                replace_module(model, la.name, inn.ScalarAffine(la.module, **kw))  # type: ignore[arg-type]
                wrapped[la.name] = "ScalarAffine"
        return ResidualResult("fixup", p, L, max(set(ms), key=ms.count), factors, tuple(zeroed),
                              wrapped, removed, tuple(notes), tuple(kept), model)  # fmt: skip
