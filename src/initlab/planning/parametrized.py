"""Layers under :mod:`torch.nn.utils.parametrize` (weight norm, spectral norm): what
:meth:`~initlab.planning.types.Plan.apply` does after drawing a parametrized tensor into the
original that stands for it (:func:`initlab.connectivity.parametrized_original`).

* Weight norm and any parametrization whose ``right_inverse`` returns several originals: the
  others (``g``) are set from the draw through ``right_inverse``, so the tensor the layer
  computes is the draw (``g v / ||v||`` with ``g = ||v||`` is ``v``).
* Spectral norm: its ``_u``/``_v`` were estimated by its constructor for the constructor's
  weight (or are meta); they are estimated again for the drawn one.

Every check that can fail runs before the first write (:func:`check_sync`); every write is undone
by the ``undo`` list the caller keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.nn.utils import parametrize

from .. import materialize, rng

if TYPE_CHECKING:
    from .types import Plan

PARAMETRIZED = "default: set by its parametrization with the tensor it belongs to"
"""The ``source`` of a parametrization's secondary original (weight norm's ``g``), which
:func:`sync` sets through ``right_inverse`` from the value drawn for the main one."""


def synced_originals(p: Plan, drawn: set[str]) -> dict[str, tuple[str, str]]:
    """The secondary originals of parametrizations (weight norm's ``g``: source
    :data:`PARAMETRIZED`) whose main original the plan draws, each with
    ``(layer, tensor name)``; :func:`sync` sets them from that draw."""
    out = {}
    for e in p:
        if e.source != PARAMETRIZED:
            continue
        local = e.name[len(e.module) + 1 :] if e.module else e.name
        tensor = local.split(".")[1]  # parametrizations.<tensor>.original<i>
        prefix = (
            f"{e.module}.parametrizations.{tensor}." if e.module else f"parametrizations.{tensor}."
        )
        if any(n.startswith(prefix) for n in drawn):
            out[e.name] = (e.module, tensor)
    return out


def check_sync(model: torch.nn.Module, layer: str, tensor: str) -> None:
    """Prepare phase: the parametrization's ``right_inverse`` runs on a meta tensor of the main
    original's shape (no values, no change), so that :func:`sync` cannot fail while writing."""
    holder = (model.get_submodule(layer) if layer else model).parametrizations[tensor]
    main = max((t for k, t in holder.named_parameters(recurse=False) if k.startswith("original")),
               key=lambda t: t.numel())  # fmt: skip
    value: object = torch.empty(main.shape, dtype=main.dtype, device="meta")
    with torch.no_grad():
        for step in reversed(holder):
            value = step.right_inverse(value)


def sync(model: torch.nn.Module, layer: str, tensor: str, device: torch.device,
          undo: list[Callable[[], None]]) -> None:  # fmt: skip
    """Set every original of ``layer``'s parametrization of ``tensor`` from the value drawn into
    its main original, through ``right_inverse`` (``setattr``), so that the parametrized tensor
    equals that draw: weight norm's ``g`` becomes ``||v||`` and ``g v / ||v||`` is ``v`` as drawn."""
    module = model.get_submodule(layer) if layer else model
    holder = module.parametrizations[tensor]
    originals = [
        (k, t) for k, t in holder.named_parameters(recurse=False) if k.startswith("original")
    ]
    for k, t in originals:  # a meta build: a place for the value first
        if t.device.type == "meta":
            name = (
                f"{layer}.parametrizations.{tensor}.{k}"
                if layer
                else f"parametrizations.{tensor}.{k}"
            )
            undo.append(
                materialize.install(model, name, torch.empty(t.shape, dtype=t.dtype, device=device))
            )
    originals = [t for k, t in holder.named_parameters(recurse=False) if k.startswith("original")]
    saved = [(t, t.detach().clone()) for t in originals]

    def restore() -> None:
        with torch.no_grad():
            for t, value in saved:
                t.set_(value)  # right_inverse gave t new storage: point it back at the old values

    undo.append(restore)
    main = max(originals, key=lambda t: t.numel())
    with torch.no_grad():
        setattr(module, tensor, main.detach().clone())


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
    value = max((t for k, t in holder.named_parameters(recurse=False) if k.startswith("original")),
                key=lambda t: t.numel()).detach()  # fmt: skip
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
