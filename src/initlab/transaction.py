"""Transactions on a model: whatever goes wrong, the model ends as it was.

A :func:`transaction` snapshots what initlab might touch (parameter and buffer values and
identities, ``.grad``, ``requires_grad``, train/eval mode of every module, the hook
dictionaries, and which parameters, buffers and submodules each module holds) and restores all of
it when the block raises: a parameter, buffer or submodule added inside the block is removed again,
and a submodule replaced inside the block (``parent._modules[leaf] = wrapper``, as the residual
methods do) is put back. Plain attributes the snapshot cannot know about are set through
:meth:`ModelState.set_attribute`, which records the old value for the undo.

This is initlab's one undo: every method that changes a model runs its whole body in one
``with transaction(model) as state:``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ModelState", "snapshot", "transaction"]

_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)  # fmt: skip


_ABSENT = object()  # an attribute that did not exist before set_attribute


@dataclass
class ModelState:
    """A restorable copy of everything about a model that initlab may change."""

    tensors: dict[tuple[nn.Module, str, str], tuple[torch.Tensor | None, torch.Tensor | None]]
    values: dict[int, torch.Tensor]
    grads: dict[int, torch.Tensor | None]
    requires_grad: dict[int, bool]
    modes: dict[nn.Module, bool]
    hooks: dict[tuple[nn.Module, str], dict]
    tensor_hooks: dict[int, object]
    layout: dict[nn.Module, tuple[dict, dict, dict, set]] = field(default_factory=dict)
    attributes: list[tuple[object, str, object]] = field(default_factory=list)

    def set_attribute(self, obj: object, name: str, value: object) -> None:
        """``setattr(obj, name, value)``, remembering the old value (or its absence) for :meth:`restore`.

        For plain attributes outside the snapshot, e.g. ``nn.TransformerEncoder.use_nested_tensor``.
        """
        self.attributes.append((obj, name, getattr(obj, name, _ABSENT)))
        setattr(obj, name, value)

    def restore(self) -> None:
        """Put every value, attribute and hook back (tensors keep their identity)."""
        for obj, name, old in reversed(self.attributes):
            if old is _ABSENT:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        for module, (params, buffers, children, non_persistent) in self.layout.items():
            for current, saved in ((module._parameters, params), (module._buffers, buffers),
                                   (module._modules, children)):  # fmt: skip
                current.clear()
                current.update(saved)
            module._non_persistent_buffers_set = set(non_persistent)
        with torch.no_grad():
            for (module, kind, name), (tensor, _) in self.tensors.items():
                getattr(module, kind)[name] = tensor
            seen: set[int] = set()
            for (_module, _kind, _name), (tensor, _) in self.tensors.items():
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                saved = self.values[id(tensor)]
                if saved.device.type != "meta" and tensor.device.type != "meta":
                    if tensor.shape == saved.shape and tensor.dtype == saved.dtype:
                        tensor.copy_(saved)
                    else:
                        tensor.data = saved.clone()
                tensor.grad = self.grads.get(id(tensor))
                if isinstance(tensor, nn.Parameter) or tensor.is_leaf:
                    tensor.requires_grad_(self.requires_grad[id(tensor)])
                if hasattr(tensor, "_backward_hooks") and id(tensor) in self.tensor_hooks:
                    tensor._backward_hooks = self.tensor_hooks[id(tensor)]
        for module, training in self.modes.items():
            module.training = training
        for (module, attr), hooks in self.hooks.items():
            current = getattr(module, attr)
            current.clear()
            current.update(hooks)


def snapshot(model: nn.Module) -> ModelState:
    """Record the model's tensors (cloned), grads, flags, modes and hooks."""
    tensors: dict = {}
    values: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor | None] = {}
    flags: dict[int, bool] = {}
    tensor_hooks: dict[int, object] = {}
    for module in model.modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, kind).items():
                tensors[(module, kind, name)] = (tensor, None)
                if tensor is None or id(tensor) in values:
                    continue
                values[id(tensor)] = tensor.detach().clone()
                grads[id(tensor)] = tensor.grad.clone() if tensor.grad is not None else None
                flags[id(tensor)] = tensor.requires_grad
                tensor_hooks[id(tensor)] = getattr(tensor, "_backward_hooks", None)
    modes = {m: m.training for m in model.modules()}
    hooks = {
        (m, attr): dict(getattr(m, attr)) for m in model.modules() for attr in _HOOK_DICTS
        if hasattr(m, attr)
    }  # fmt: skip
    layout = {
        m: (
            dict(m._parameters),
            dict(m._buffers),
            dict(m._modules),
            set(m._non_persistent_buffers_set),
        )
        for m in model.modules()
    }
    return ModelState(tensors, values, grads, flags, modes, hooks, tensor_hooks, layout)


@contextlib.contextmanager
def transaction(model: nn.Module) -> Iterator[ModelState]:
    """Run a block on ``model``; if it raises, restore the model exactly and re-raise.

    >>> net = nn.Linear(2, 2)
    >>> before = net.weight.detach().clone()
    >>> try:
    ...     with transaction(net):
    ...         _ = net.weight.data.zero_()
    ...         raise RuntimeError("boom")
    ... except RuntimeError:
    ...     pass
    >>> torch.equal(net.weight, before)
    True
    """
    state = snapshot(model)
    try:
        yield state
    except BaseException:
        state.restore()
        raise
