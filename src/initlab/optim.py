"""Optimizer parameter groups for the inits whose official recipe trains some parameters slower."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import InitlabError


def param_groups(model: nn.Module, lr: float, *, weight_decay: float = 0.0,
                 scalar_lr_mult: float = 0.1) -> list[dict[str, Any]]:  # fmt: skip
    """Fixup's optimizer split for any ``torch.optim`` optimizer: biases and scalars at
    ``lr * scalar_lr_mult``, the rest at ``lr``.

    As the official Fixup training scripts (``hongyi-zhang/Fixup``, ``cifar/cifar_train.py``):
    every parameter whose last name part contains ``bias`` or ``scale`` (Fixup's scalar biases
    and multipliers, the layers' own biases) trains at lr/10; both groups get the same
    ``weight_decay``; frozen parameters are left out. Why it matters beyond Fixup: in a residual
    net without normalization whose branch ends start at zero, every branch end's bias gets the
    same gradient (the stream's), so the ``L`` of them move the stream ``L`` times as far as one;
    the bench's 100-block residual MLP diverges at lr 0.1 with one lr and trains with this
    split (``benchmarks/heldout_training.py``, README).

    >>> import torch
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> [(len(g["params"]), g["lr"]) for g in param_groups(net, 0.1)]
    [(2, 0.010000000000000002), (2, 0.1)]
    """
    if lr <= 0 or scalar_lr_mult <= 0 or weight_decay < 0:
        raise InitlabError(
            f"param_groups needs lr > 0, scalar_lr_mult > 0 and weight_decay >= 0, got "
            f"lr={lr}, scalar_lr_mult={scalar_lr_mult}, weight_decay={weight_decay}"
        )
    scalars, others = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            leaf = name.rsplit(".", 1)[-1]
            (scalars if "bias" in leaf or "scale" in leaf else others).append(p)
    groups = [
        {"params": scalars, "lr": lr * scalar_lr_mult, "weight_decay": weight_decay},
        {"params": others, "lr": lr, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]
