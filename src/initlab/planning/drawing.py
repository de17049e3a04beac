"""One entry's values, drawn from its own random stream ``(seed, parameter name)``."""

from __future__ import annotations

import inspect

import torch

from .. import rng, shard
from ..schemes import SCHEMES


def draw(entry: shard.Entry, tensor: torch.Tensor, seed: int) -> torch.Tensor:
    """Write one entry's values into ``tensor`` from the stream ``(seed, entry.name)``."""
    if entry.scheme == "keep":
        return tensor
    if shard.is_dtensor(tensor):
        return shard.draw_local(entry, tensor, seed)
    if entry.fn is not None:
        g = rng.generator(seed, entry.name)
        sig = inspect.signature(entry.fn)
        entry.fn(tensor, g) if len(sig.parameters) >= 2 else entry.fn(tensor)
        return tensor
    scheme = SCHEMES[entry.scheme]
    kw = {k: v for k, v in entry.kwargs.items() if k != "gain"}
    if scheme.distribution is not None:
        dist = scheme.distribution(entry.fans, entry.gain, **kw)
        if dist.kind == "constant":  # what the block samplers write (a float32 value, cast to
            # the tensor's dtype), without seeding a generator per block
            with torch.no_grad():
                return tensor.fill_(torch.tensor(dist.mean, dtype=torch.float32))
        if tensor.is_contiguous():
            return rng.fill_(tensor, dist.sample_, seed, entry.name)
        work = rng.fill_(torch.empty(tensor.shape), dist.sample_, seed, entry.name)
        return tensor.copy_(work)
    # structured schemes compute in float32, or in the parameter's dtype when wider (float64);
    # a contiguous float32/float64 parameter is written directly (no buffer of its size)
    g = rng.generator(seed, entry.name)
    if tensor.dtype in (torch.float32, torch.float64) and tensor.is_contiguous():
        return scheme.apply(tensor, fans=entry.fans, gain=entry.gain, generator=g, **kw)
    wide = tensor.dtype.is_floating_point and tensor.dtype.itemsize > 4
    work = torch.empty(tensor.shape, dtype=tensor.dtype if wide else torch.float32)
    scheme.apply(work, fans=entry.fans, gain=entry.gain, generator=g, **kw)
    return tensor.copy_(work)
