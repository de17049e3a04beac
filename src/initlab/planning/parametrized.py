"""Layers under :mod:`torch.nn.utils.parametrize` (weight norm, spectral norm): what
:meth:`~initlab.planning.types.Plan.apply` does after drawing a parametrized tensor into the
original that stands for it (:func:`initlab.connectivity.parametrized_original`).

* Every parametrization whose steps all have a ``right_inverse``: the tensor is set to the draw
  through it, so the layer computes the draw. Weight norm's ``g`` becomes ``||v||``
  (``g v / ||v||`` is ``v``); orthogonal's ``base`` becomes the draw made orthogonal, in place of
  the constructor's (which made the result depend on how the model was built).
* A weight norm registered the older way (``torch.nn.utils.weight_norm``: ``weight_g``,
  ``weight_v`` and a forward pre-hook): ``g`` is set to ``||v||`` the same way.
* Spectral norm: its ``_u``/``_v`` were estimated by its constructor for the constructor's
  weight (or are meta); they are estimated again for the drawn one.

Every check that can fail runs before the first write (:func:`check_sync`); every write is undone
by the ``undo`` list the caller keeps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.nn.utils import parametrize

from .. import materialize, rng
from ..connectivity import main_original, originals, parametrized_original, weight_norm_hooks

if TYPE_CHECKING:
    from .types import Plan

PARAMETRIZED = "default: set by its parametrization with the tensor it belongs to"
"""The ``source`` of a parametrization's secondary original (weight norm's ``g``), which
:func:`sync` sets through ``right_inverse`` from the value drawn for the main one."""


def synced_originals(p: Plan, drawn: set[str]) -> dict[str, str]:
    """The secondary originals (weight norm's ``g``: source :data:`PARAMETRIZED`) whose main one
    the plan draws, each with the main one's name: :func:`sync` or :func:`sync_hooked` set them
    from that draw (so a meta build needs no other value for them)."""
    out = {}
    for e in p:
        if e.source != PARAMETRIZED:
            continue
        local = e.name[len(e.module) + 1 :] if e.module else e.name
        at = f"{e.module}." if e.module else ""
        if local.startswith("parametrizations."):  # parametrizations.<tensor>.original<i>
            prefix = f"{at}parametrizations.{local.split('.')[1]}."
            main = next((n for n in drawn if n.startswith(prefix)), None)
        else:  # <tensor>_g of a hook-based weight norm
            main = f"{at}{local.removesuffix('_g')}_v"
            main = main if main in drawn else None
        if main is not None:
            out[e.name] = main
    return out


def hooked_norms(model: torch.nn.Module, drawn: set[str]) -> list[tuple[str, object]]:
    """``(module name, hook)`` of every weight norm registered the older way
    (``torch.nn.utils.weight_norm``) whose ``v`` the plan draws: :func:`sync_hooked` sets ``g``."""
    out = []
    for name, module in model.named_modules():
        for hook in weight_norm_hooks(module):
            v = f"{name}.{hook.name}_v" if name else f"{hook.name}_v"
            if v in drawn:
                out.append((name, hook))
    return out


def sync_hooked(model: torch.nn.Module, name: str, hook: object, device: torch.device,
                undo: list[Callable[[], None]]) -> None:  # fmt: skip
    """``g = ||v||`` (over every dim but the hook's), so that the weight the hook computes,
    ``g v / ||v||``, is ``v`` as drawn; the module's ``weight`` attribute is recomputed too."""
    module = model.get_submodule(name) if name else model
    at = f"{name}." if name else ""
    g_name = f"{hook.name}_g"
    g = module._parameters[g_name]
    if g.device.type == "meta":
        fresh = torch.empty(g.shape, dtype=g.dtype, device=device)
        undo.append(materialize.install(model, f"{at}{g_name}", fresh))
        g = module._parameters[g_name]
    saved, weight = g.detach().clone(), getattr(module, hook.name, None)

    def restore() -> None:
        with torch.no_grad():
            g.copy_(saved)
        setattr(module, hook.name, weight)

    undo.append(restore)
    with torch.no_grad():
        v = module._parameters[f"{hook.name}_v"]
        g.copy_(torch.norm_except_dim(v, 2, hook.dim).to(g.dtype))
        setattr(module, hook.name, hook.compute_weight(module))


def to_sync(model: torch.nn.Module, p: Plan, drawn: set[str]) -> list[tuple[str, str]]:
    """``(layer, tensor name)`` of every parametrization whose main original the plan draws and
    whose every step has a ``right_inverse``: :func:`sync` sets the tensor to that draw."""
    out: dict[tuple[str, str], None] = {}
    for e in p:
        if e.name not in drawn or ".parametrizations." not in f".{e.name}":
            continue
        module = model.get_submodule(e.module) if e.module else model
        original = parametrized_original(
            module, e.name[len(e.module) + 1 :] if e.module else e.name
        )
        if original is None or not original[1]:
            continue
        if all(hasattr(step, "right_inverse") for step in module.parametrizations[original[0]]):
            out[(e.module, original[0])] = None
    return list(out)


def _main(holder: torch.nn.Module) -> torch.Tensor:
    main = main_original(holder)
    assert main is not None, "a parametrization list always holds an original"
    return main[1]


def _inverted(steps: list[torch.nn.Module], value: torch.Tensor, seed: int, key: str) -> object:
    """``right_inverse`` of the steps, last first, under the global RNG seeded from ``(seed,
    key)`` (orthogonal's completes a wide matrix with ``torch.randn``), given back after."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.derive_seed(seed, "right_inverse", key))
        out: object = value
        for step in reversed(steps):
            out = step.right_inverse(out)
    return out


def check_sync(model: torch.nn.Module, layer: str, tensor: str, seed: int) -> None:
    """Prepare phase: the parametrization's ``right_inverse`` runs on copies of its steps and
    zeros of the main original's shape (the model does not change), so that :func:`sync` cannot
    fail while writing."""
    holder = (model.get_submodule(layer) if layer else model).parametrizations[tensor]
    main = _main(holder)
    steps = copy.deepcopy(list(holder))
    _inverted(steps, torch.zeros(main.shape, dtype=main.dtype), seed, f"{layer}.{tensor}")


def sync(model: torch.nn.Module, layer: str, tensor: str, device: torch.device, seed: int,
         undo: list[Callable[[], None]]) -> None:  # fmt: skip
    """Set ``layer``'s parametrized ``tensor`` to the value drawn into its main original,
    through ``right_inverse`` (``setattr``), so that the layer computes that draw: weight norm's
    ``g`` becomes ``||v||`` (``g v / ||v||`` is ``v``); orthogonal's ``base`` becomes the draw made
    orthogonal (the constructor's ``base`` no longer counts); spectral norm's is the identity."""
    module = model.get_submodule(layer) if layer else model
    holder = module.parametrizations[tensor]
    names = [k for k, _ in originals(holder)]
    for k in names:  # a meta build: a place for the value first
        t = getattr(holder, k)
        if t.device.type == "meta":
            name = (
                f"{layer}.parametrizations.{tensor}.{k}"
                if layer
                else f"parametrizations.{tensor}.{k}"
            )
            fresh = torch.empty(t.shape, dtype=t.dtype, device=device)
            undo.append(materialize.install(model, name, fresh))
    saved = [(t, t.detach().clone()) for t in (getattr(holder, k) for k in names)]
    buffers = [(step, dict(step._buffers)) for step in holder]  # orthogonal's base is replaced

    def restore() -> None:
        with torch.no_grad():
            for t, value in saved:
                t.set_(value)  # right_inverse gave t new storage: point it back at the old values
        for step, before in buffers:
            step._buffers.clear()
            step._buffers.update(before)

    undo.append(restore)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.derive_seed(seed, "right_inverse", f"{layer}.{tensor}"))
        setattr(module, tensor, _main(holder).detach().clone())


def power_iterated(model: torch.nn.Module, drawn: set[str]) -> dict[str, tuple[str, int]]:
    """The ``_u``/``_v`` buffers of spectral-norm steps (torch's ``_SpectralNorm``: a
    parametrization step with those buffers and a ``_power_method``) whose original the plan
    draws, each with ``(parametrization list's name, step index)``: :func:`estimate` sets them
    for the drawn weight, as the step's constructor did for the constructor's weight."""
    out = {}
    for name, holder in model.named_modules():
        if not isinstance(holder, parametrize.ParametrizationList):
            continue
        if not any(f"{name}.{k}" in drawn for k, _ in holder.named_parameters(recurse=False)):
            continue
        for i, step in enumerate(holder):
            if callable(getattr(step, "_power_method", None)) and hasattr(step, "_u"):
                for b in ("_u", "_v"):
                    out[f"{name}.{i}.{b}"] = (name, i)
    return out


def estimate(model: torch.nn.Module, name: str, index: int, device: torch.device, seed: int,
              undo: list[Callable[[], None]]) -> None:  # fmt: skip
    """Spectral norm's singular vectors for the weight as drawn: ``_u`` and ``_v`` start as unit
    vectors from the streams ``(seed, buffer name)`` and take the 15 power iterations its
    constructor runs (they were estimated for the constructor's weight, or are meta)."""
    holder = model.get_submodule(name)
    step = holder[index]
    value = _main(holder).detach()
    with torch.no_grad():
        for earlier in list(holder)[:index]:
            value = earlier(value)
        matrix = step._reshape_weight_to_matrix(value)
        for b, size in (("_u", matrix.shape[0]), ("_v", matrix.shape[1])):
            old = getattr(step, b)
            g = rng.generator(seed, f"{name}.{index}.{b}")  # drawn on the CPU, as every stream
            fresh = torch.nn.functional.normalize(torch.randn(size, generator=g), dim=0,
                                                  eps=step.eps)  # fmt: skip
            fresh = fresh.to(device=device if old.is_meta else old.device, dtype=old.dtype)
            undo.append(materialize.install(model, f"{name}.{index}.{b}", fresh))
        step._power_method(matrix, 15)
