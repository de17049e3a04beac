r"""The learned-scale core GradInit and MetaInit share: one scalar :math:`\alpha_i` per tensor.

Both methods reparametrize each chosen tensor as :math:`\theta_i = \alpha_i\,\theta_i^0`
(:math:`\theta_i^0` the tensor at the start, :math:`\alpha_i = 1`), evaluate the model
functionally at :math:`\theta(\alpha)` and differentiate through it; they differ only in the
objective and the update of :math:`\alpha`. This module holds what they share:

* **which tensors** get a scale (:func:`select`): trainable ones with nonzero norm that the
  method's own filter keeps; frozen parameters and buffers are passed through unchanged;
* **the functional forward** (:func:`forward`): :math:`\alpha \mapsto \text{model}(\text{batch};
  \theta(\alpha))` by :func:`torch.func.functional_call`, the model itself never changed, running
  statistics updated on copies only;
* **writing back** (:func:`write`): :math:`\theta_i \leftarrow \alpha_i\theta_i^0`, once, at the end;
* **batches**: :func:`call_args` maps any input :func:`initlab.trace` accepts (a tensor, a tuple of
  positional args, a dict of keyword args) to ``(args, kwargs)``; :func:`cat` concatenates two
  such inputs along the batch dimension; :func:`loss_of` turns an output into the scalar loss
  (``loss_fn(output, target)``, or the model's own ``output.loss`` when ``loss_fn`` is ``None``).

Nothing here touches the model's state except :func:`write`; the methods own their transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..errors import InitlabError
from ._common import Batches, check_finite, split_batch

__all__ = [
    "LossFn",
    "Scaled",
    "call_args",
    "cat",
    "draw",
    "forward",
    "loss_of",
    "select",
    "theta",
    "write",
]

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss_fn(output, target) -> scalar``; ``target`` is ``None`` for batches of keyword args alone."""


@dataclass(frozen=True)
class Scaled:
    """The tensors of a model split for a learned-scale method.

    Attributes:
        names: the scaled tensors, in ``named_parameters`` order (index ``i`` is :math:`\\alpha_i`).
        others: trainable tensors without a scale (they still count in gradients).
        base: :math:`\\theta_i^0`, a detached copy of each scaled tensor.
        base_norm: :math:`\\|\\theta_i^0\\|_F`.
        trainable: the model's trainable parameters (written by :func:`write`).
        frozen: parameters with ``requires_grad=False`` (detached, passed through).
        buffers: the model's buffers (copied on every forward).
        skipped: trainable tensors without a scale, with the reason.
    """

    names: tuple[str, ...]
    others: tuple[str, ...]
    base: dict[str, torch.Tensor]
    base_norm: dict[str, float]
    trainable: dict[str, nn.Parameter]
    frozen: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    skipped: dict[str, str]


def select(model: nn.Module, exclude: Callable[[str, torch.Tensor], str | None]) -> Scaled:
    """Choose the scaled tensors: trainable, nonzero norm, and ``exclude(name, p)`` is ``None``.

    ``exclude`` returns the reason a trainable tensor gets no scale, or ``None`` to scale it; a
    tensor of zero norm is skipped as well (:math:`\\alpha\\,0` has no gradient in :math:`\\alpha`).
    """
    named = dict(model.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    skipped: dict[str, str] = {}
    names: list[str] = []
    for n, p in trainable.items():
        reason = exclude(n, p)
        if reason is None and float(p.detach().norm()) == 0.0:
            reason = "zero norm (as the official code)"
        if reason is None:
            names.append(n)
        else:
            skipped[n] = reason
    base = {n: trainable[n].detach().clone() for n in names}
    return Scaled(
        names=tuple(names),
        others=tuple(n for n in trainable if n not in base),
        base=base,
        base_norm={n: float(base[n].norm()) for n in names},
        trainable=trainable,
        frozen={n: p.detach() for n, p in named.items() if n not in trainable},
        buffers=dict(model.named_buffers()),
        skipped=skipped,
    )


def theta(s: Scaled, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """:math:`\\theta(\\alpha)`: :math:`\\alpha_i\\theta_i^0` for scaled tensors, a fresh leaf
    (``requires_grad``) for the other trainable ones; differentiable in ``alpha``."""
    out = {n: a * s.base[n] for n, a in zip(s.names, alpha.unbind(), strict=True)}
    out.update({n: s.trainable[n].detach().clone().requires_grad_(True) for n in s.others})
    return out


def call_args(inputs: object) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of one forward call on ``inputs``, as :func:`initlab.trace` reads them.

    A mapping is keyword args (``model(**inputs)``), a tuple is positional args, a list of tensors
    too, anything else is the single argument.

    >>> call_args({"x": 1}), call_args((1, 2)), call_args(3)
    (((), {'x': 1}), ((1, 2), {}), ((3,), {}))
    """
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    if isinstance(inputs, list) and inputs and all(isinstance(e, torch.Tensor) for e in inputs):
        return tuple(inputs), {}
    return (inputs,), {}


def forward(model: nn.Module, s: Scaled, params: Mapping[str, torch.Tensor], inputs: object) -> Any:
    """``model(inputs)`` with its trainable tensors replaced by ``params`` (functional).

    Buffers are copied first, so a norm layer in training mode updates copies of its running
    statistics, never the model's.
    """
    bufs = {n: b.clone() for n, b in s.buffers.items()}
    args, kwargs = call_args(inputs)
    return functional_call(model, {**s.frozen, **params, **bufs}, args, kwargs, strict=False)


def write(s: Scaled, scales: Sequence[float]) -> None:
    """Write :math:`\\theta_i \\leftarrow \\alpha_i\\theta_i^0` into the model (in place, no grad)."""
    with torch.no_grad():
        for n, a in zip(s.names, scales, strict=True):
            s.trainable[n].copy_(a * s.base[n])


def cat(a: Any, b: Any, who: str) -> Any:
    """Two inputs (or targets) of the same structure concatenated along dim 0.

    Tensors are concatenated; tuples, lists and dicts element by element; any other value
    (``None``, a flag such as ``use_cache=False``) must be equal in both and is kept.
    """
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys():
        return {k: cat(a[k], b[k], who) for k in a}
    if isinstance(a, (tuple, list)) and type(a) is type(b) and len(a) == len(b):
        return type(a)(cat(u, v, who) for u, v in zip(a, b, strict=True))
    if not isinstance(a, (torch.Tensor, Mapping, tuple, list)) and a == b:
        return a
    raise InitlabError(
        f"{who}: cannot concatenate two input batches ({type(a).__name__} and {type(b).__name__}); "
        "every batch must have the same structure (same dict keys, tuple length, non-tensor values)"
    )


def draw(batches: Batches, who: str) -> tuple[Any, Any]:
    """The next ``(inputs, target)`` from ``batches`` (a dict batch is ``(batch, None)``), checked finite."""
    x, y = split_batch(next(batches), f"{who}: data")
    check_finite(x, f"{who}: an input batch")
    return x, y


def loss_of(output: Any, target: Any, loss_fn: LossFn | None, who: str) -> torch.Tensor:
    """The scalar loss: ``loss_fn(output, target)``, or the model's own ``output.loss`` (a
    transformers model given ``labels``) when ``loss_fn`` is ``None``."""
    if loss_fn is not None:
        return loss_fn(output, target)
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, Mapping):
        loss = output.get("loss")
    if not isinstance(loss, torch.Tensor):
        raise InitlabError(
            f"{who}: loss_fn is None but the model's output ({type(output).__name__}) has no .loss; "
            "pass loss_fn(output, target), or put the labels in the input dict (e.g. labels= for "
            "a transformers model) so the model returns its loss"
        )
    return loss
