"""Where a model's tensors and an example live: the meta device, device and dtype mismatches.

Every public entry point (``plan``/``init``, ``lsuv``, ``gradinit``, ``metainit``, ``doctor``)
calls :func:`check_placement` first, so these mistakes are named as such instead of surfacing as
a raw torch error from deep inside a forward pass. A leaf module: it imports only torch and
:mod:`initlab.errors`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .errors import InitlabError

__all__ = ["check_placement", "placement_problem"]


def _example_tensors(example: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(example)[0] if isinstance(t, torch.Tensor)]


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer once (a shared one once), read from the modules' slots: no
    qualified names are built, which is most of the cost of ``named_parameters`` on a big model."""
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for m in model.modules():
        for slot in (m._parameters, m._buffers):
            for t in slot.values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
    return out


def _first_meta_name(model: nn.Module) -> str:
    return next(n for n, t in [*model.named_parameters(), *model.named_buffers()]
                if t.device.type == "meta")  # fmt: skip


def placement_problem(
    model: nn.Module, example: Any = None, *, needs_values: bool = True
) -> str | None:
    """What is wrong with where ``model`` and ``example`` live, or ``None``.

    * ``needs_values``: a parameter or buffer on the meta device has a shape but no values;
    * a tensor of ``example`` on a device that holds none of the model's (real) parameters;
    * a floating tensor of ``example`` whose dtype differs from the one dtype of all the
      model's floating parameters (skipped under autocast, which casts on the fly);
    * a lazy module's parameter (``nn.LazyLinear``) that no forward pass has shaped yet.

    >>> placement_problem(nn.Linear(2, 2).double(), torch.randn(3, 2))
    "dtype mismatch: the example is torch.float32 but the model's parameters are torch.float64; cast one to the other (example.to(torch.float64) or model.to(torch.float32))"
    """
    tensors = _model_tensors(model)
    lazy = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
            if is_lazy(t)] if any(is_lazy(t) for t in tensors) else []  # fmt: skip
    if lazy:
        return (
            f"{len(lazy)} of the model's tensors are uninitialized lazy parameters or buffers "
            f"(e.g. {lazy[0]!r}, of a Lazy* module): they have no shape yet; run one forward "
            "pass first (model(example)) to shape them, then initialize"
        )
    meta = 0
    model_devices: set[torch.device] = set()
    float_dtypes: set[torch.dtype] = set()
    for t in tensors:  # one pass: a device object is built per access (~1 us each)
        device = t.device
        if device.type == "meta":
            meta += 1
            continue
        model_devices.add(device)
        if t.is_floating_point():
            float_dtypes.add(t.dtype)
    if needs_values and meta:
        return (
            f"the model is on the meta device ({meta} of its {len(tensors)} tensors, e.g. "
            f"{_first_meta_name(model)!r}, have a shape but no values); materialize it first: "
            "initlab.init(model, example=...) draws meta parameters onto a real device, or "
            "model.to_empty(device='cpu') and then an init"
        )
    inputs = [t for t in _example_tensors(example) if t.device.type != "meta"]
    if not model_devices or not inputs:
        return None
    stray = sorted({str(t.device) for t in inputs if t.device not in model_devices})
    if stray:
        where = ", ".join(sorted(map(str, model_devices)))
        return (
            f"device mismatch: the example is on {', '.join(stray)} but the model's parameters "
            f"are on {where}; move one to the other (example.to({where.split(', ')[0]!r}) or "
            f"model.to({stray[0]!r}))"
        )
    if len(float_dtypes) != 1 or torch.is_autocast_enabled():
        return None
    (dtype,) = float_dtypes
    odd = sorted({str(t.dtype) for t in inputs if t.is_floating_point() and t.dtype != dtype})
    if odd:
        return (
            f"dtype mismatch: the example is {', '.join(odd)} but the model's parameters are "
            f"{dtype}; cast one to the other (example.to({dtype}) or model.to({odd[0]}))"
        )
    return None


def check_placement(
    model: nn.Module, example: Any = None, *, who: str, needs_values: bool = True
) -> None:
    """Raise :class:`InitlabError` naming the problem :func:`placement_problem` finds.

    ``who`` names the caller in the message (``"initlab.lsuv"``).

    >>> with torch.device("meta"):
    ...     net = nn.Linear(2, 2)
    >>> check_placement(net, who="initlab.lsuv")
    Traceback (most recent call last):
    ...
    initlab.errors.InitlabError: initlab.lsuv: the model is on the meta device (2 of its 2 tensors, e.g. 'weight', have a shape but no values); materialize it first: initlab.init(model, example=...) draws meta parameters onto a real device, or model.to_empty(device='cpu') and then an init
    """
    if not isinstance(model, nn.Module):
        return  # the caller's own type check names that
    problem = placement_problem(model, example, needs_values=needs_values)
    if problem:
        raise InitlabError(f"{who}: {problem}")
