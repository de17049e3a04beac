"""Applying a plan: the prepare and write phases, undo on failure, interrupts held while writing."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from .. import materialize, shard
from ..materialize import MetaState
from ..schemes import SCHEMES
from .drawing import draw
from .parametrized import (
    PARAMETRIZED,
    check_sync,
    estimate,
    hooked_norms,
    power_iterated,
    sync,
    sync_hooked,
    synced_originals,
    to_sync,
)

if TYPE_CHECKING:  # types imports this module for Plan.apply
    from .types import Plan


def _apply(p: Plan, transactional: bool = True, meta_state: MetaState | None = None) -> None:
    """Draw the plan in two phases, so that undo never needs a copy of the model.

    1. *Prepare*: everything that can fail runs before a weight changes: the values of a meta
       model's buffers and kept parameters (:func:`initlab.materialize.resolve`), each
       elementwise scheme's options (its distribution is built), each built-in structured
       scheme's checks (orthogonal, ZerO, ...: run on a meta tensor of the parameter's shape),
       and every rule callable (user code), on a scratch copy of its parameter that is kept
       until it is written.
    2. *Write*: elementwise fills straight into the parameters, the prepared values copied in,
       meta tensors swapped for their values. Nothing here allocates more than a block of the
       random stream; an interrupt (Ctrl-C) arriving meanwhile is held until the writing ends
       and delivered then, with the model fully initialized.

    The extra memory is the scratch copies of step 1 (rule callables only) and, while writing,
    one block of random numbers or one structured draw's buffer at a time. With ``transactional=False`` step 1 prepares only the meta values
    and draws everything in place (structured schemes too).
    """
    model = p.model
    device = p.device or torch.device("cpu")
    drawn = {e.name for e in p if e.scheme != "keep"}
    parametrized = _any_parametrized(p)
    synced = synced_originals(p, drawn)
    targets = to_sync(model, p, drawn) if parametrized else []
    for layer, tensor in targets:
        check_sync(model, layer, tensor, p.seed)
    estimated = power_iterated(model, drawn) if parametrized else {}
    hooked = hooked_norms(model, drawn) if any(e.source == PARAMETRIZED for e in p) else []
    leftovers = materialize.meta_leftovers(model, drawn | set(synced) | set(estimated))
    params = dict(model.named_parameters(remove_duplicate=False))  # one walk, not one per entry

    def param(name: str) -> torch.Tensor:
        found = params.get(name)
        return found if found is not None else model.get_parameter(name)

    strays = _strays(p, param) if leftovers or any(
        param(n).device.type == "meta" for n in drawn) else []  # fmt: skip
    values = (materialize.resolve(model, leftovers, device, p.seed, meta_state, strays)
              if leftovers or strays else {})  # fmt: skip
    ready: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        for entry in p:
            if entry.scheme == "keep":
                continue
            tensor = param(entry.name)
            if shard.is_dtensor(tensor):
                continue
            elementwise = entry.fn is None and SCHEMES[entry.scheme].distribution is not None
            if elementwise and (tensor.is_contiguous() or tensor.device.type == "meta"):
                kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
                SCHEMES[entry.scheme].distribution(entry.fans, entry.gain, **kw)  # checks options
                continue
            if entry.fn is None and tensor.device.type != "meta":
                # a built-in structured scheme (orthogonal, ZerO, ...): its checks run here on a
                # meta tensor (no values, no cost); the draw itself happens while writing, into
                # one transient buffer of this parameter's size
                kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
                probe = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
                SCHEMES[entry.scheme].apply(probe, fans=entry.fans, gain=entry.gain, **kw)
                continue
            if tensor.device.type == "meta":
                work = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
            elif transactional:
                work = tensor.detach().clone()  # a rule callable may read the current values
            else:
                continue
            ready[entry.name] = draw(entry, work, p.seed)
    undo: list[Callable[[], None]] = []
    with _held_interrupts() as held:
        try:
            with torch.no_grad():
                for entry in p:
                    if entry.scheme == "keep":
                        continue
                    tensor = param(entry.name)  # only this entry's own install replaces it
                    value = ready.pop(entry.name, None)
                    if tensor.device.type == "meta":
                        fresh = value is None
                        if fresh:
                            value = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
                        undo.append(materialize.install(model, entry.name, value))
                        if fresh:
                            draw(entry, model.get_parameter(entry.name).detach(), p.seed)
                    elif value is not None:
                        tensor.detach().copy_(value)
                    else:
                        if transactional and shard.is_dtensor(tensor):
                            saved = tensor.detach().clone()
                            undo.append(lambda t=tensor, s=saved: t.detach().copy_(s))
                        draw(entry, tensor.detach(), p.seed)
                for name, value in values.items():
                    undo.append(materialize.install(model, name, value))
                for layer, tensor in targets:
                    sync(model, layer, tensor, device, p.seed, undo)
                for name, hook in hooked:
                    sync_hooked(model, name, hook, device, undo)
                for name, step in dict.fromkeys(estimated.values()):
                    estimate(model, name, step, device, p.seed, undo)
        except BaseException:
            for back in reversed(undo):
                back()
            raise
    if held:
        held[0](signal.SIGINT, None)  # the interrupt that came while writing, now


def _any_parametrized(p: Plan) -> bool:
    return any(".parametrizations." in f".{e.name}" for e in p)


def _strays(p: Plan, param: Callable[[str], torch.Tensor]) -> list[str]:
    """In a model built on meta: the parameters the default keeps (no layer to plan them by, or
    values that looked chosen) that are not on meta, made by a constructor that ignores the
    default device; :func:`initlab.materialize.resolve` gives them their own init's values.

    Not those a rule keeps (``rules={name: "keep"}``: a value put there on purpose, e.g. with
    ``load_state_dict(..., assign=True)``), nor those flagged ``_no_reinit`` or
    ``_is_hf_initialized`` (read from a checkpoint)."""
    out = []
    for e in p:
        if e.scheme != "keep" or e.source not in ("default", "kept"):
            continue
        t = param(e.name)
        flagged = getattr(t, "_no_reinit", False) or getattr(t, "_is_hf_initialized", False)
        if t.device.type != "meta" and not flagged:
            out.append(e.name)
    return out


@contextlib.contextmanager
def _held_interrupts() -> Iterator[list[Callable[..., Any]]]:
    """Hold SIGINT inside the block; yields a list that then holds the handler to call after it.

    Only the main thread receives signals; elsewhere (or where signals cannot be set) this does
    nothing.
    """
    held: list[Callable[..., Any]] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed outside Python: it cannot be put back, leave it
        yield held
        return

    def hold(signum: int, frame: object) -> None:
        if callable(previous) and not held:
            held.append(previous)

    try:
        signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):
        yield held
        return
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)
