r"""Per-parameter random streams that do not depend on creation order, device or sharding.

Every parameter draws from its own streams, keyed by ``(seed, qualified parameter name)``. A
parameter's flat element range is cut into blocks of :data:`BLOCK` elements and block ``b`` draws
from a generator seeded by ``hash(seed, name, b)``. Elementwise (i.i.d.) schemes can therefore
fill any contiguous slice of the parameter (a shard held by one rank) by drawing only the blocks
that overlap it, and the result is bit-identical to the single-process draw. Draws happen on the
CPU in float32 (then are cast and copied), so the values do not depend on the device or dtype.

No global RNG state is read or changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .errors import InitlabError

__all__ = ["BLOCK", "MAX_WORKERS", "derive_seed", "fill_", "generator"]

BLOCK = 1 << 20  # elements per independently seeded block
MAX_WORKERS = 8  # threads drawing one parameter's blocks at most


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and keys (BLAKE2b of their text): stable across runs and hosts.

    >>> derive_seed(0, "fc.weight") == derive_seed(0, "fc.weight") != derive_seed(1, "fc.weight")
    True
    """
    text = "\x1f".join([str(int(seed)), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """A fresh CPU generator seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


Sampler = Callable[[torch.Tensor, torch.Generator], object]


def fill_(
    tensor: torch.Tensor,
    sample: Sampler,
    seed: int,
    key: str,
    *,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """Fill ``tensor`` in place with an elementwise sampler, block by block.

    Args:
        tensor: a contiguous tensor holding elements ``[offset, offset + numel)`` of the flattened
            full parameter (the whole parameter when it is not sharded).
        sample: ``sample(buffer, generator)`` writes i.i.d. draws into a float32 CPU buffer.
        seed, key: name the stream; usually the plan's seed and the parameter's qualified name.
        offset: flat index of ``tensor``'s first element in the full parameter.
        total: number of elements of the full parameter (default ``offset + numel``).

    The values depend only on ``(seed, key)``, ``total`` and each element's flat index. With
    ``torch.get_num_threads() > 1``, the blocks of a CPU float32 tensor are drawn by that many
    threads at once, :data:`MAX_WORKERS` at most (``normal_`` itself runs on one thread); the
    values are the same.

    >>> import torch
    >>> full = fill_(torch.empty(6, 4), lambda t, g: t.normal_(generator=g), 0, "w")
    >>> half = fill_(torch.empty(3, 4), lambda t, g: t.normal_(generator=g), 0, "w", offset=12, total=24)
    >>> torch.equal(full[3:], half)
    True
    """
    n = tensor.numel()
    total = offset + n if total is None else total
    if offset < 0 or offset + n > total:
        raise InitlabError(
            f"rng.fill_: a shard of {n} elements at offset {offset} does not fit in a parameter of "
            f"{total} elements; pass offset >= 0 and total >= offset + numel"
        )
    if n == 0:
        return tensor
    if not tensor.is_contiguous():
        raise InitlabError("rng.fill_ needs a contiguous tensor; call .contiguous() on the shard")
    flat = tensor.view(-1)
    direct = tensor.device.type == "cpu" and tensor.dtype == torch.float32
    first, last = offset // BLOCK, (offset + n - 1) // BLOCK

    def draw(block: int) -> None:
        start = block * BLOCK
        length = min(BLOCK, total - start)  # blocks are drawn whole, whoever holds them
        lo, hi = max(start, offset), min(start + length, offset + n)
        g = generator(seed, key, block)
        with torch.no_grad():
            if direct and lo == start and hi - lo == length:
                sample(flat[lo - offset : hi - offset], g)  # straight into the parameter
                return
            buffer = torch.empty(length, dtype=torch.float32)
            sample(buffer, g)
            flat[lo - offset : hi - offset].copy_(buffer[lo - start : hi - start])

    workers = min(torch.get_num_threads(), MAX_WORKERS, last - first + 1) if direct else 1
    if workers > 1:  # blocks are independent streams writing disjoint slices: draw them at once
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(draw, range(first, last + 1)))
    else:
        for block in range(first, last + 1):
            draw(block)
    return tensor
