"""The meta pass: operands moved to meta, meta calls remembered by their operands' layout, meta
copies of a model's state, and the module state put back after a pass."""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten


def _meta_operands(args: tuple, kwargs: dict, func: Any,
                   leaves: list | None = None) -> tuple[tuple, dict]:  # fmt: skip
    """``func``'s operands for a meta pass: real tensors meeting meta ones become meta too.

    The example and what ``forward`` builds from it alone (position ids, masks, a padding check)
    stay real, so value reads on them work; weights and buffers are meta, and an op mixing both
    runs on meta. In-place ops and ``out=`` are left as they are (a copy would hide the write).
    ``leaves``: ``_leaves((args, kwargs))``, when the caller has it already.
    """
    leaves = _leaves((args, kwargs)) if leaves is None else leaves
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    mixed = any(t.device.type == "meta" for t in tensors) and any(
        t.device.type != "meta" for t in tensors
    )
    name = getattr(func, "__name__", "")
    inplace = "out" in kwargs or (name.endswith("_") and not name.endswith("__"))
    inplace = inplace or (name.startswith("__i") and name not in ("__init__", "__index__"))
    if not mixed or inplace:
        return args, kwargs

    def meta(t: object) -> object:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            return t.to("meta")
        return t

    return tree_map(meta, args), tree_map(meta, kwargs)


_METADATA = frozenset(
    [getattr(torch.Tensor, n) for n in ("dim", "size", "stride", "numel", "storage_offset",
                                        "is_contiguous", "is_floating_point", "is_complex",
                                        "element_size", "get_device")]
    + [getattr(torch.Tensor, n).__get__ for n in ("shape", "dtype", "device", "requires_grad",
                                                  "ndim", "layout", "is_cuda", "is_meta",
                                                  "is_leaf", "is_sparse", "is_quantized")]
)  # fmt: skip
"""Tensor methods and attributes that read a tensor's layout only: no values, no tensor out,
nothing to trace. The tracer runs them straight (about a third of a meta pass's calls: the
tracer's own ``is_floating_point`` checks in module hooks, a model's ``x.shape``)."""

_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
          torch.memory_format, type(Ellipsis))  # fmt: skip


_LEAF_TYPES = frozenset([torch.Tensor, nn.Parameter, slice, *_PLAIN])
_LEAF_CLASSES = (torch.Tensor, slice, *_PLAIN)


def _leaves(obj: object, out: list | None = None) -> list:
    """The leaves ``tree_flatten`` would give, in its order; fast for what torch calls receive
    (tensors, numbers, plain tuples, lists and dicts, sizes), ``tree_flatten`` for anything else.
    Exact types are tested first (a set lookup): this runs several times per traced op."""
    out = [] if out is None else out
    kind = type(obj)
    if kind is tuple or kind is list:
        for x in obj:
            if type(x) in _LEAF_TYPES:
                out.append(x)
            else:
                _leaves(x, out)
    elif kind is dict:
        for x in obj.values():
            if type(x) in _LEAF_TYPES:
                out.append(x)
            else:
                _leaves(x, out)
    elif kind in _LEAF_TYPES or isinstance(obj, _LEAF_CLASSES):
        out.append(obj)
    elif kind is torch.Size:
        out.extend(obj)  # its ints, as tree_flatten gives them
    else:
        out.extend(tree_flatten(obj)[0])
    return out


class _Uncacheable(Exception):
    pass


def _layout_key(obj: object, tensors: list[torch.Tensor]) -> object:
    """A hashable key of what a meta op reads from ``obj``; collects its tensors in order."""
    kind = type(obj)
    if kind is torch.Tensor or kind is nn.Parameter:
        if obj.device.type != "meta":
            raise _Uncacheable
        tensors.append(obj)
        return (obj.shape, obj.stride(), obj.storage_offset(), obj.dtype, obj.requires_grad)
    if kind is tuple or kind is list:
        return (kind, tuple([_layout_key(x, tensors) for x in obj]))
    if kind is dict:
        return (dict, tuple([(k, _layout_key(v, tensors)) for k, v in obj.items()]))
    if kind is torch.Size:
        return (torch.Size, tuple(obj))
    if kind is slice:
        return (slice, obj.start, obj.stop, obj.step)
    if isinstance(obj, _PLAIN):
        return (kind, obj)
    raise _Uncacheable  # a tensor subclass, or anything else


class _MetaCalls:
    """Calls on meta tensors, remembered by what they read: a repeated call costs ~10 us, not ~1 ms.

    Meta kernels of elementwise ops and norms run torch's Python reference code (0.3-1 ms a call
    in torch 2.13), which made a meta pass of a ResNet-50 cost as much as its init. An op's result
    on meta is a function of its operands' shapes, strides, dtypes and ``requires_grad``, of its
    other arguments and of grad mode; a call seen before with the same ones gets fresh tensors of
    the recorded layout (the same object where the op returned an operand). In-place ops, ``out=``
    and calls with arguments that are not plain values are always run.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple, tuple | None] = {}

    def __call__(self, func: Any, args: tuple, kwargs: dict) -> Any:
        out = _shortcut(func, args, kwargs)
        if out is not None:
            return out
        name = getattr(func, "__name__", "")
        if name.endswith("_") or name.startswith("__i") or name == "__setitem__":
            return func(*args, **kwargs)  # in place: may change the operand's layout; always run
        tensors: list[torch.Tensor] = []
        try:
            key = (func, torch.is_grad_enabled(), _layout_key(args, tensors),
                   _layout_key(kwargs, tensors))  # fmt: skip
        except _Uncacheable:
            return func(*args, **kwargs)
        if not tensors:
            return func(*args, **kwargs)
        recipe = self.seen.get(key)
        if recipe is not None:
            return self.replay(recipe, tensors)
        out = func(*args, **kwargs)
        if key not in self.seen:
            self.seen[key] = self.record(out, tensors)
        return out

    @staticmethod
    def record(out: object, tensors: list[torch.Tensor]) -> tuple | None:
        """How to rebuild ``out``, or ``None`` (never replay) when it is not plain tensors."""
        outs, spec = ([out], None) if isinstance(out, torch.Tensor) else tree_flatten(out)
        recipe: list[object] = []
        for t in outs:
            if not isinstance(t, torch.Tensor):
                if not isinstance(t, (int, float, bool, type(None))):
                    return None
                recipe.append(("value", t))
                continue
            same = [i for i, operand in enumerate(tensors) if operand is t]
            if same:
                recipe.append(("operand", same[0]))
            elif type(t) is torch.Tensor and t.device.type == "meta":
                rebuilt = _meta_like(tuple(t.shape), t.stride(), t.dtype, t.requires_grad)
                if rebuilt.stride() != t.stride():
                    return None
                recipe.append(("new", tuple(t.shape), t.stride(), t.dtype, t.requires_grad))
            else:
                return None
        return spec, tuple(recipe)

    @staticmethod
    def replay(recipe: tuple, tensors: list[torch.Tensor]) -> object:
        spec, parts = recipe
        outs = []
        for part in parts:
            if part[0] == "value":
                outs.append(part[1])
            elif part[0] == "operand":
                outs.append(tensors[part[1]])
            else:
                outs.append(_meta_like(*part[1:]))
        return outs[0] if spec is None else tree_unflatten(outs, spec)


_F_BATCH_NORM = torch.nn.functional.batch_norm
_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training",
                    "momentum", "eps")  # fmt: skip


def _batch_norm_on_meta(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.batch_norm`` on meta operands without running it, or ``None`` to run it.

    Its meta kernel is torch's Python decomposition (~2 ms a call; a ResNet-50 has a dozen
    distinct layouts, the bulk of its meta pass). The result is a tensor of the input's shape,
    dtype and memory format (contiguous or channels-last), requiring grad when grad mode is on
    and the input, weight or bias does; the running statistics' in-place update (train mode) has
    no values to change on meta. Only that plain case is short-cut: every operand a plain meta
    tensor of the input's dtype with one element per channel, and in train mode more than one
    value per channel (otherwise the real call runs, and raises as it would).
    """
    if len(args) > len(_BATCH_NORM_ARGS) or not set(kwargs) <= set(_BATCH_NORM_ARGS):
        return None
    bound = {**dict(zip(_BATCH_NORM_ARGS, args, strict=False)), **kwargs}
    x = bound.get("input")
    if type(x) is not torch.Tensor or x.device.type != "meta" or x.dim() < 2:
        return None
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        return None
    for key in ("running_mean", "running_var", "weight", "bias"):
        t = bound.get(key)
        if t is None:
            continue
        if type(t) not in (torch.Tensor, nn.Parameter) or t.device.type != "meta":
            return None
        if t.dtype != x.dtype or t.shape != (x.shape[1],):
            return None
    if bound.get("training", False):
        if bound.get("running_mean") is not None and bound.get("running_var") is None:
            return None
        if x.shape[0] * math.prod(x.shape[2:]) == 1:
            return None  # the real call raises: one value per channel when training
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, bound.get("weight"), bound.get("bias"))
    )
    return _meta_like(tuple(x.shape), x.stride(), x.dtype, grad)  # not empty_like: ~1 ms on meta


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _per_dim(value: object, n: int) -> tuple[int, ...] | None:
    """A conv option (an int or n ints) as n ints; ``None`` for anything else ("same")."""
    if type(value) is int:
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(type(v) is int for v in value):
        return tuple(value)
    return None


def _conv_on_meta(n: int, args: tuple, kwargs: dict) -> torch.Tensor | None:
    r"""``F.conv{n}d`` on meta operands without running it, or ``None`` to run it.

    torch's meta kernel for convolutions is Python (shape checks through symbolic-shape
    guards, ~0.5 ms a call: two thirds of a ResNet-50's time in meta kernels). Its result is a contiguous
    tensor of the input's dtype with :math:`\lfloor (i + 2p - d(k - 1) - 1) / s \rfloor + 1`
    positions per spatial dim; that is what this returns for a batched input whose operands
    are plain meta tensors of one dtype and fit (channels, groups, a bias per output channel,
    integer options, every output size positive). Anything else runs the real call, which
    raises where it would.
    """
    if len(args) > len(_CONV_ARGS) or not set(kwargs) <= set(_CONV_ARGS):
        return None
    bound = {**dict(zip(_CONV_ARGS, args, strict=False)), **kwargs}
    x, w, b = bound.get("input"), bound.get("weight"), bound.get("bias")
    for t in (x, w, b):
        if t is not None and (
            type(t) not in (torch.Tensor, nn.Parameter) or t.device.type != "meta"
        ):
            return None
    if x is None or w is None or x.dim() != n + 2 or w.dim() != n + 2 or w.dtype != x.dtype:
        return None
    groups = bound.get("groups", 1)
    stride = _per_dim(bound.get("stride", 1), n)
    padding = _per_dim(bound.get("padding", 0), n)
    dilation = _per_dim(bound.get("dilation", 1), n)
    if bound.get("padding") == "valid":
        padding = (0,) * n
    if stride is None or padding is None or dilation is None or type(groups) is not int:
        return None
    c_out = w.shape[0]
    if groups < 1 or x.shape[1] == 0 or x.shape[1] != w.shape[1] * groups or c_out % groups:
        return None
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        return None
    if b is not None and (b.dtype != x.dtype or tuple(b.shape) != (c_out,)):
        return None
    sizes = [(i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in
             zip(x.shape[2:], w.shape[2:], stride, padding, dilation, strict=True)]  # fmt: skip
    if min(sizes) < 1:
        return None
    shape = (x.shape[0], c_out, *sizes)
    grad = torch.is_grad_enabled() and (
        x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)
    )
    return _meta_like(shape, _contiguous_strides(shape), x.dtype, grad)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape`` (a size-0 dim counts as 1, as in torch)."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(1, d)
    return tuple(reversed(strides))


_SHORTCUTS = {
    _F_BATCH_NORM: _batch_norm_on_meta,
    torch.conv1d: lambda args, kwargs: _conv_on_meta(1, args, kwargs),
    torch.conv2d: lambda args, kwargs: _conv_on_meta(2, args, kwargs),
    torch.conv3d: lambda args, kwargs: _conv_on_meta(3, args, kwargs),
}
"""Calls whose meta kernels cost much more than computing their result's layout."""


def _shortcut(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func``'s result computed from its operands' layout (:data:`_SHORTCUTS`), or ``None``.

    A shortcut answers only when every tensor operand is already a plain meta tensor, so the
    tracer tries it before :func:`_meta_operands` (which would leave such operands as they are):
    a ResNet-50's convolutions and norms skip that walk.
    """
    fn = _SHORTCUTS.get(func)
    return None if fn is None else fn(args, kwargs)


def _meta_like(shape: tuple, stride: tuple, dtype: torch.dtype, grad: bool) -> torch.Tensor:
    """A fresh meta tensor of this layout; one that requires grad is a non-leaf, as op outputs are."""
    t = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    return t.requires_grad_().clone() if grad else t


def _swap_in_copies(model: nn.Module, zeros_on: torch.device | None = None,
                    dense: bool = False) -> dict[int, torch.Tensor]:  # fmt: skip
    """Put a copy of every parameter and buffer in its module's slot; return
    ``{id(original): copy}``. Call it inside :func:`_restoring_module_state`, which puts the
    originals back.

    The copies are meta tensors of the same layout (parameters stay parameters, with their
    ``requires_grad``); a tensor held in several slots (tied weights) gets one copy in all of
    them. ``zeros_on``: real zeros on that device instead, for a pass that needs values on a model
    that has none (built on meta). Each is one zero expanded to the shape (stride 0), so the
    copies cost no memory whatever the model's size; a forward that writes into its state in
    place, or a kernel that refuses stride 0 (``grouped_mm``), fails on them. ``dense``:
    allocated zeros, the model's size in memory, for those. One walk over the modules' slots
    (``torch.func.functional_call`` would build and resolve every qualified name).
    """

    def copy(t: torch.Tensor) -> torch.Tensor:
        if zeros_on is None:
            return torch.empty_like(t, device="meta")
        if dense:
            return torch.zeros(t.shape, dtype=t.dtype, device=zeros_on)
        return torch.zeros((), dtype=t.dtype, device=zeros_on).expand(t.shape)

    copies: dict[int, torch.Tensor] = {}
    for m in model.modules():
        for slot, is_param in ((m._parameters, True), (m._buffers, False)):
            for key, t in slot.items():  # only existing keys are reassigned: safe while iterating
                if t is None:
                    continue
                c = copies.get(id(t))
                if c is None:
                    c = copy(t)
                    if is_param:
                        c = nn.Parameter(c, requires_grad=t.requires_grad)
                    copies[id(t)] = c
                slot[key] = c
    return copies


@contextlib.contextmanager
def _restoring_module_state(model: nn.Module) -> Iterator[None]:
    """Put back every module attribute, parameter and buffer slot a (failed) pass reassigned.

    A forward that caches tensors on the module (``self._cos = ...``) would otherwise keep the
    meta copies of the trace.
    """
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    try:
        yield
    finally:
        for m, attrs, params, buffers in saved:
            for slot, before in ((m._parameters, params), (m._buffers, buffers)):
                if not _same_entries(slot, before):
                    slot.clear()
                    slot.update(before)
            if _same_entries(m.__dict__, attrs):
                continue  # the common case, checked at C speed
            for k in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[k]
            for k, v in attrs.items():
                if m.__dict__.get(k, _MISSING) is not v:
                    m.__dict__[k] = v


def _same_entries(now: dict, before: dict) -> bool:
    """Whether ``now`` holds exactly ``before``'s keys, each bound to the same object (a dict
    whose keys were only reassigned keeps its order, so the values pair up in order)."""
    return now.keys() == before.keys() and all(map(operator.is_, now.values(), before.values()))


_MISSING = object()
