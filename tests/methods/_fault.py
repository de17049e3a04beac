"""Helpers for the learned-init tests: model state fingerprints and a failing data source."""

from __future__ import annotations

import torch
from torch import nn


def state_of(model: nn.Module) -> dict:
    """Everything the transaction promises to restore, in comparable form."""
    return {
        "values": {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
        },
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["values"].keys() == b["values"].keys()
    for k in a["values"]:
        assert torch.equal(a["values"][k], b["values"][k]), k
    for k in a["grads"]:
        ga, gb = a["grads"][k], b["grads"][k]
        assert (ga is None) == (gb is None), k
        if ga is not None:
            assert torch.equal(ga, gb), k
    assert a["flags"] == b["flags"]
    assert a["modes"] == b["modes"]
    assert a["hooks"] == b["hooks"]


def dirty(model: nn.Module) -> None:
    """Give the model a non-default state: some grads, a frozen tensor, a hook, mixed modes."""
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 0.5)
    params[-1].requires_grad_(False)
    model.train()
    next(iter(model.children())).eval()
    model.register_forward_hook(lambda m, a, o: None)


def failing(batches: list, after: int):
    """A generator that yields ``after`` batches, then raises."""
    for i, b in enumerate(batches):
        if i == after:
            raise RuntimeError("loader broke")
        yield b
