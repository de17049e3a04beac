r"""Sharded initialization: each rank draws only the part of a parameter it holds.

A :class:`torch.distributed.tensor.DTensor` parameter (after FSDP2 ``fully_shard`` or
``distribute_tensor``) holds one block of the full parameter on each rank. Because
:mod:`initlab.rng` draws every parameter from independently seeded blocks of
:data:`~initlab.rng.BLOCK` flat elements (counter-based), a rank can draw exactly the elements it
holds, and the gathered result is bit-identical to the single-process draw with the same seed,
whatever the mesh size.

Placements handled: :class:`~torch.distributed.tensor.Shard` (any dim, any number of mesh dims)
and :class:`~torch.distributed.tensor.Replicate`. The local block follows torch's chunk rule
(:func:`torch.chunk`): along a dim of size ``n`` split over ``k`` ranks, rank ``c`` holds rows
``[min(c q, n), min((c + 1) q, n))`` with ``q = ceil(n / k)``; nested shards on several mesh dims
are applied in mesh-dim order, as ``torch.distributed.tensor`` does. ``Partial`` and strided
(FSDP2 + tensor-parallel) placements raise :class:`~initlab.errors.InitlabError`.

Cost per rank:

* elementwise schemes (normal, uniform, trunc_normal, Kaiming, Xavier, LeCun, constants): when the
  local block is a contiguous flat range of the full parameter (``Shard(0)``, what FSDP2 uses, and
  ``Replicate``), the rank draws its own elements plus at most two partial
  :data:`~initlab.rng.BLOCK`\ s at the edges, straight into the local tensor: time and memory
  ``O(local numel + 2 BLOCK)``. Other layouts (``Shard(1)``...) draw the flat span from the first
  to the last local element into a float32 buffer and keep the local elements (up to a full copy);
* structured schemes (orthogonal, identity, dirac, sparse, ZerO, delta-orthogonal) and callable
  rules need the whole matrix: every rank draws the full parameter in float32 on the CPU and keeps
  its block, so time is that of the single-process draw (e.g. a QR of the full matrix) and peak
  memory is one float32 copy of that one parameter (not of the model).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn

from . import rng
from .connectivity import Fans
from .errors import InitlabError
from .schemes import SCHEMES, Scheme

if TYPE_CHECKING:  # the package costs seconds to import; a DTensor caller has loaded it already
    from torch.distributed.tensor import DTensor

__all__ = ["Entry", "ShardedPlan", "apply", "draw_local", "is_dtensor", "local_region"]


class Entry(Protocol):
    """What this module reads of one decision (an :class:`initlab.PlanEntry` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def kwargs(self) -> Mapping[str, Any]: ...
    @property
    def gain(self) -> float: ...
    @property
    def fans(self) -> Fans | None: ...
    @property
    def fn(self) -> Callable[..., Any] | None: ...

    def draw(self, tensor: torch.Tensor, seed: int) -> torch.Tensor:
        """Write the entry's values into the ordinary tensor ``tensor`` (the single-process draw)."""
        ...


class ShardedPlan(Protocol):
    """What :func:`apply` reads of a plan (an :class:`initlab.Plan` satisfies it)."""

    @property
    def model(self) -> nn.Module: ...
    @property
    def seed(self) -> int: ...
    def __iter__(self) -> Iterator[Entry]: ...


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a :class:`torch.distributed.tensor.DTensor` (parameter or not).

    A DTensor can only exist once ``torch.distributed.tensor`` has been imported (its class lives
    there), so this looks the class up in ``sys.modules`` instead of importing that package: it
    costs seconds, and ``import initlab`` does not pay them.

    >>> is_dtensor(torch.zeros(2))
    False
    """
    module = sys.modules.get("torch.distributed.tensor")
    dtensor = getattr(module, "DTensor", None)
    return dtensor is not None and isinstance(tensor, dtensor)


def _chunk(size: int, parts: int, index: int) -> tuple[int, int]:
    """``(start, length)`` of chunk ``index`` of ``size`` rows split ``parts`` ways (torch.chunk).

    >>> [_chunk(5, 2, i) for i in range(2)], [_chunk(1, 2, i) for i in range(2)]
    ([(0, 3), (3, 2)], [(0, 1), (1, 0)])
    """
    q = -(-size // parts)  # ceil
    start = min(index * q, size)
    return start, min(size, start + q) - start


def local_region(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(local_shape, global_offset)`` of the block of a DTensor that this rank holds.

    Computed from the global shape, the placements and this rank's mesh coordinate with the
    :func:`torch.chunk` rule (the public-API equivalent of torch's private
    ``compute_local_shape_and_global_offset``). A rank outside the mesh holds an empty block.

    Raises:
        InitlabError: for a placement other than ``Shard`` / ``Replicate``.
    """
    if not is_dtensor(tensor):
        raise InitlabError(
            f"expected a torch.distributed.tensor.DTensor, got {type(tensor).__name__}"
        )
    shape = list(tensor.shape)
    offset = [0] * len(shape)
    mesh: Any = getattr(tensor, "device_mesh")  # noqa: B009 (a DTensor attribute)
    coord = mesh.get_coordinate()
    if coord is None:  # this rank is not part of the mesh
        return tuple(0 for _ in shape), tuple(offset)
    from torch.distributed.tensor import Replicate, Shard  # loaded already: tensor is a DTensor

    placements: tuple[Any, ...] = tuple(getattr(tensor, "placements", ()))
    for mesh_dim, placement in enumerate(placements):
        if type(placement) is Shard:  # exact type: _StridedShard is handled below
            d = placement.dim % max(len(shape), 1)
            start, length = _chunk(shape[d], mesh.size(mesh_dim), coord[mesh_dim])
            offset[d] += start
            shape[d] = length
        elif not isinstance(placement, Replicate):
            raise InitlabError(
                f"initlab.shard: placement {placement!r} on mesh dim {mesh_dim} is not supported; "
                "initialize parameters placed with Shard(dim) or Replicate (FSDP2 fully_shard and "
                "distribute_tensor give these), then redistribute"
            )
    return tuple(shape), tuple(offset)


def _flat_range(shape: tuple[int, ...], local: tuple[int, ...],
                offset: tuple[int, ...]) -> tuple[int, int, bool]:  # fmt: skip
    """``(first flat index, span length, contiguous)`` of a block of a C-contiguous tensor."""
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    first = sum(o * s for o, s in zip(offset, strides, strict=True))
    last = sum((o + n - 1) * s for o, n, s in zip(offset, local, strides, strict=True))
    span = last - first + 1
    return first, span, span == math.prod(local)


def _local_tensor(param: DTensor) -> torch.Tensor:
    local = param.to_local()
    if local.device.type == "meta":
        raise InitlabError(
            "initlab.shard: the local shard is on the meta device; allocate it first with "
            "model.to_empty(device=...) after fully_shard / distribute_tensor, then initialize"
        )
    return local


def draw_local(entry: Entry, param: torch.Tensor, seed: int) -> torch.Tensor:
    """Write the local block of a DTensor parameter with the values of the single-process draw.

    ``entry`` is a :class:`~initlab.PlanEntry`; ``param`` the DTensor parameter (or its
    ``.detach()``); ``seed`` the plan's seed. The gathered parameter equals
    ``entry.draw(full_tensor, seed)`` bit for bit (see the module docstring for the cost per rank).
    Returns ``param``.

    Raises:
        InitlabError: ``param`` is not a DTensor, has an unsupported placement, or is still on
            the meta device.
    """
    if not is_dtensor(param):
        raise InitlabError(
            f"initlab.shard.draw_local expects a DTensor parameter, got {type(param).__name__}; "
            "use entry.draw(tensor, seed) for ordinary tensors"
        )
    if entry.scheme == "keep":
        return param
    shape = tuple(param.shape)
    local_shape, offset = local_region(param)
    with torch.no_grad():
        local = _local_tensor(cast("DTensor", param))
        if tuple(local.shape) != local_shape:
            raise InitlabError(
                f"initlab.shard: local shard of {entry.name!r} has shape {tuple(local.shape)}, "
                f"expected {local_shape} from torch.chunk over placements {getattr(param, 'placements', ())}"
            )
        if local.numel() == 0:
            return param
        scheme = SCHEMES.get(entry.scheme) if entry.fn is None else None
        if scheme is not None and scheme.distribution is not None:
            _draw_elementwise(entry, scheme, local, shape, local_shape, offset, seed)
        else:
            _draw_full_then_slice(entry, local, shape, local_shape, offset, seed)
    return param


def _draw_elementwise(entry: Entry, scheme: Scheme, local: torch.Tensor, shape: tuple[int, ...],
                      local_shape: tuple[int, ...], offset: tuple[int, ...], seed: int) -> None:  # fmt: skip
    assert scheme.distribution is not None  # the caller checked: an elementwise scheme
    kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
    dist = scheme.distribution(entry.fans, entry.gain, **kw)
    name, total = entry.name, math.prod(shape)
    first, span, contiguous = _flat_range(shape, local_shape, offset)
    if contiguous and local.is_contiguous():  # Shard(0) / Replicate: straight into the shard
        rng.fill_(local, dist.sample_, seed, name, offset=first, total=total)
        return
    buffer = rng.fill_(torch.empty(span, dtype=torch.float32), dist.sample_, seed, name,
                       offset=first, total=total)  # fmt: skip
    strides = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
    local.copy_(buffer.as_strided(local_shape, strides))


def _draw_full_then_slice(entry: Entry, local: torch.Tensor, shape: tuple[int, ...],
                          local_shape: tuple[int, ...], offset: tuple[int, ...], seed: int) -> None:  # fmt: skip
    full = entry.draw(torch.empty(shape, dtype=torch.float32), seed)
    index = tuple(slice(o, o + n) for o, n in zip(offset, local_shape, strict=True))
    local.copy_(full[index])


def apply(plan: ShardedPlan, model: nn.Module | None = None, *, seed: int | None = None) -> None:
    """Apply a plan to a model whose parameters may be DTensors (FSDP2, ``distribute_tensor``).

    Plan the model before sharding it (planning traces a forward pass and only reads shapes; a
    meta-device model works), shard it, allocate the shards with ``model.to_empty(device=...)``,
    then call ``apply(plan)`` on every rank. DTensor parameters go through :func:`draw_local`,
    others through ``entry.draw`` (the single-process draw). Not transactional: on error, re-run it.

    Args:
        plan: an :class:`~initlab.Plan`.
        model: the sharded model (default ``plan.model``; FSDP2 shards in place, keeping names).
        seed: default ``plan.seed``.
    """
    model = model if model is not None else plan.model
    seed = seed if seed is not None else plan.seed
    with torch.no_grad():
        for entry in plan:
            if entry.scheme == "keep":
                continue
            param = model.get_parameter(entry.name)
            if is_dtensor(param):
                draw_local(entry, param.detach(), seed)
            elif param.device.type == "meta":
                raise InitlabError(
                    f"initlab.shard.apply: {entry.name!r} is on the meta device; call "
                    "model.to_empty(device=...) first (or use plan.apply() for unsharded models)"
                )
            else:
                entry.draw(param.detach(), seed)
