"""Values for what a plan does not draw on a meta-device model: buffers and kept parameters.

A model built under ``torch.device("meta")`` has no values at all. :meth:`initlab.plan.Plan.apply`
draws the parameters its plan decides, but a model also needs its **buffers** (BatchNorm's
running statistics, a rotary embedding's ``inv_freq``, ``position_ids``) and the parameters the
plan **keeps** (a ViT's ``pos_embed``, Mamba's ``A_log``) before its first forward. Each gets the
value the same model built on the target device would have, from the first source that gives it:

1. ``meta_state``: the caller's values, a state dict (qualified name -> tensor) or a callable
   ``fn(name, meta_tensor)`` returning a tensor (or ``None`` to pass);
2. the model's own init: a transformers model's ``_init_weights`` (which in transformers 5 also
   sets buffers: ``inv_freq`` via the rope function, ``position_ids``, BatchNorm statistics);
3. a ``torch.nn`` module's own reset: ``reset_running_stats()`` for buffers, ``reset_parameters()``
   for parameters (what their constructors run).

Sources 2 and 3 run on a stand-in of the module whose other tensors are on the meta device, so
they write nothing but the values asked for. Their code draws from the global RNG: it runs under
``torch.random.fork_rng`` from a stream derived from ``(seed, module name)``, so the result is
reproducible and the caller's RNG state is neither read nor advanced. A source that leaves a
value unwritten (NaN or a sentinel remains) does not count. Whatever no source gives is named in
one :class:`~initlab.errors.InitlabError`, raised before anything is allocated on the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from . import rng
from .errors import InitlabError

__all__ = ["MetaState", "install", "meta_leftovers", "resolve"]

MetaState = Mapping[str, torch.Tensor] | Callable[[str, torch.Tensor], torch.Tensor | None]


def meta_leftovers(model: nn.Module, drawn: set[str]) -> list[str]:
    """Qualified names of the meta buffers and meta parameters not in ``drawn`` (first names;
    ``drawn`` also names the buffers the caller sets itself)."""
    out, seen = [], set()
    for name, p in model.named_parameters():
        if p.device.type == "meta" and name not in drawn and id(p) not in seen:
            out.append(name)
        seen.add(id(p))
    for name, b in model.named_buffers():
        if b is not None and b.device.type == "meta" and id(b) not in seen and name not in drawn:
            out.append(name)
            seen.add(id(b))
    return out


def _owner(model: nn.Module, name: str) -> tuple[str, nn.Module, str]:
    prefix, _, local = name.rpartition(".")
    return prefix, (model.get_submodule(prefix) if prefix else model), local


def _tensor(module: nn.Module, local: str) -> torch.Tensor:
    t = module._parameters.get(local)
    return t if t is not None else module._buffers[local]


def _fresh(like: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An allocated tensor of ``like``'s shape and dtype, filled with a 'not written' sentinel."""
    t = torch.empty(like.shape, dtype=like.dtype, device=device)
    if t.is_floating_point() or t.is_complex():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(False)
    return t.fill_(torch.iinfo(t.dtype).min)


def _written(t: torch.Tensor, again: torch.Tensor | None = None) -> bool:
    if t.numel() == 0:
        return True
    if t.is_floating_point() or t.is_complex():
        return not bool(torch.isnan(t).any())
    if t.dtype == torch.bool:  # no sentinel: written when a second run from True agrees
        return again is not None and torch.equal(t, again)
    return not bool(t.eq(torch.iinfo(t.dtype).min).any())


def _stand_in(module: nn.Module, values: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` whose tensors are meta, except its own ``values`` (local names)."""
    memo: dict[int, object] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in memo:
            continue
        meta = t if t.device.type == "meta" else torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=t.requires_grad)
        memo[id(t)] = meta
    for local, v in values.items():
        old = _tensor(module, local)
        memo[id(old)] = (
            nn.Parameter(v, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else v
        )
    return copy.deepcopy(module, memo)


def _hf_initializer(model: nn.Module, prefix: str) -> Callable[[nn.Module], None] | None:
    """The nearest enclosing transformers model's ``_init_weights`` (duck-typed)."""
    parts = prefix.split(".") if prefix else []
    for i in range(len(parts), -1, -1):
        m = model.get_submodule(".".join(parts[:i])) if i else model
        fn = getattr(m, "_init_weights", None)
        if callable(fn) and hasattr(m, "config"):
            return fn
    return None


def _torch_reset(module: nn.Module, params: bool) -> Callable[[nn.Module], None] | None:
    if not type(module).__module__.startswith("torch.nn"):
        return None  # a user class's constructor may set other values after its reset
    if params and hasattr(module, "reset_parameters"):
        return lambda m: m.reset_parameters()
    if hasattr(module, "reset_running_stats"):
        return lambda m: m.reset_running_stats()
    return None


def _run(fn: Callable[[nn.Module], None], module: nn.Module, values: dict[str, torch.Tensor],
         seed: int, key: str) -> None:  # fmt: skip
    """Run a module's own init code on a stand-in that writes into ``values``."""
    shell = _stand_in(module, values)
    devices = [v.device for v in values.values() if v.device.type == "cuda"][:1]
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        # the model's code reads the global RNG: lend it a stream of its own, then give it back
        torch.manual_seed(rng.derive_seed(seed, "own init", key))
        fn(shell)
    for local in values:
        got = _tensor(shell, local)
        if got is not values[local]:  # the code replaced the tensor instead of writing into it
            values[local].copy_(got.detach())


def _from_state(state: MetaState, name: str, meta: torch.Tensor,
                device: torch.device) -> torch.Tensor | None:  # fmt: skip
    value = state(name, meta) if callable(state) else state.get(name)
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(meta.shape):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InitlabError(
            f"meta_state gives {name} as {got}; the model needs a tensor of shape "
            f"{tuple(meta.shape)}: pass the value of the model built on the target device"
        )
    return value.detach().to(device=device, dtype=meta.dtype).clone()


def _group(model: nn.Module, names: list[str]) -> Iterator[tuple[str, nn.Module, list[str]]]:
    by_module: dict[str, list[str]] = {}
    for name in names:
        by_module.setdefault(name.rpartition(".")[0], []).append(name)
    for prefix, group in by_module.items():
        yield prefix, (model.get_submodule(prefix) if prefix else model), group


def resolve(model: nn.Module, names: list[str], device: torch.device, seed: int = 0,
            meta_state: MetaState | None = None,
            strays: list[str] = ()) -> dict[str, torch.Tensor]:  # fmt: skip
    """A value on ``device`` for each meta buffer or kept parameter in ``names``, or an error.

    ``strays``: kept parameters of a model built on meta that are *not* on meta (made by a
    constructor that ignores the default device: ``nn.Parameter(torch.FloatTensor(n, d))`` holds
    uninitialized memory, XLNet's attention weights). The same sources give them the values the
    model built on the target device would have; where none does they keep their values, copied
    to ``device`` if they are elsewhere (no error: a value set on purpose is one too).

    Nothing on ``model`` changes; install the values with :func:`install`.

    >>> with torch.device("meta"):
    ...     bn = nn.BatchNorm1d(3)
    >>> v = resolve(bn, ["running_mean", "running_var", "num_batches_tracked"], torch.device("cpu"))
    >>> v["running_mean"].tolist(), v["running_var"].tolist(), int(v["num_batches_tracked"])
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 0)
    """
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for prefix, module, group in _group(model, [*names, *strays]):
        todo = {}
        for name in group:
            meta = _tensor(module, name.rpartition(".")[2])
            given = _from_state(meta_state, name, meta, device) if meta_state is not None else None
            if given is not None:
                out[name] = given
            elif meta.numel() == 0:  # no values to know
                out[name] = torch.empty(meta.shape, dtype=meta.dtype, device=device)
            else:
                todo[name.rpartition(".")[2]] = meta
        params = any(isinstance(m, nn.Parameter) for m in todo.values())
        sources = [_hf_initializer(model, prefix), _torch_reset(module, params)]
        for fn in [s for s in sources if s is not None]:
            if not todo:
                break
            values = {k: _fresh(m, device) for k, m in todo.items()}
            try:
                _run(fn, module, values, seed, prefix)
                again = None
                if any(v.dtype == torch.bool for v in values.values()):
                    again = {k: (torch.ones_like(v) if v.dtype == torch.bool else v.clone())
                             for k, v in values.items()}  # fmt: skip
                    _run(fn, module, again, seed, prefix)
            except Exception:  # the module's own code could not run on a stand-in: next source
                continue
            for k, v in values.items():
                if _written(v, again[k] if again is not None else None):
                    out[f"{prefix}.{k}" if prefix else k] = v
                    del todo[k]
        for k, t in todo.items():
            name = f"{prefix}.{k}" if prefix else k
            if name not in strays:
                missing.append(name)
            elif t.device != device:
                out[name] = t.detach().to(device, copy=True)
    if missing:
        raise InitlabError(
            f"the model is on the meta device and initlab cannot know the values of {missing} "
            "(buffers or parameters the plan keeps; their module's constructor set them and "
            "neither the module nor the model has code that sets them again). Nothing was "
            "allocated. Pass meta_state={name: tensor} (e.g. the state dict of the model built "
            "on the target device) or a callable fn(name, meta_tensor) -> tensor; for a "
            "parameter, a rule also works, e.g. rules={" + repr(missing[0]) + ": ('trunc_normal', "
            "{'std': 0.02})}"
        )
    return out


def install(model: nn.Module, name: str, value: torch.Tensor) -> Callable[[], None]:
    """Put ``value`` in place of the meta tensor ``name`` in every module that holds it.

    Returns a function that puts the meta tensor back.
    """
    _, module, local = _owner(model, name)
    old = _tensor(module, local)
    kind = "_parameters" if isinstance(old, nn.Parameter) else "_buffers"
    new = nn.Parameter(value, requires_grad=old.requires_grad) if kind == "_parameters" else value
    holders = [(m, k) for m in model.modules() for k, v in getattr(m, kind).items() if v is old]
    for m, k in holders:
        getattr(m, kind)[k] = new

    def undo() -> None:
        for m, k in holders:
            getattr(m, kind)[k] = old

    return undo
