"""Structured schemes: orthogonal, delta-orthogonal, identity, Dirac, sparse, ZerO (Hadamard)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..connectivity import Fans
from ..errors import InitlabError


def _blocks(tensor: torch.Tensor, fans: Fans | None) -> int:
    """How many independent matrices are stacked along dim 0: chunks (gates, Q/K/V) x groups.

    Fans count one block: a block maps ``fan_in`` inputs to ``fan_out / receptive_field`` outputs,
    so it holds ``fan_in * fan_out / receptive_field`` elements. For a grouped (or transposed)
    convolution, whose fans are per group, this counts the groups; otherwise it is ``fans.chunks``.
    """
    if fans is None:
        return 1
    per_block, rest = divmod(fans.fan_in * fans.fan_out, fans.receptive_field)
    if rest == 0 and per_block > 0 and tensor.numel() % per_block == 0:
        n = tensor.numel() // per_block
        if n % fans.chunks == 0 and tensor.shape[0] % n == 0:
            return n
    return fans.chunks


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype structured schemes compute in: float32, or the tensor's own when it is wider.

    bf16/fp16 weights get float32 QR and Hadamard entries (then one rounding); float64 weights
    get float64 ones, so a float64 orthogonal matrix is orthogonal to ~1e-15, as torch's.
    """
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        return torch.promote_types(tensor.dtype, torch.float32)
    return torch.float32


def _chunks(tensor: torch.Tensor, fans: Fans | None) -> list[torch.Tensor]:
    """The blocks of :func:`_blocks` as views (one per LSTM gate, Q/K/V matrix or conv group)."""
    n = _blocks(tensor, fans)
    return list(tensor.chunk(n, dim=0)) if n > 1 else [tensor]


def _orthogonal_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"orthogonal needs a tensor with >= 2 dims, got shape {tuple(tensor.shape)}"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        for chunk in _chunks(tensor, fans):
            # QR in float32 (float64 for float64 tensors), on the CPU, then cast and copied
            work = torch.empty(chunk.shape, dtype=_work_dtype(tensor))
            nn.init.orthogonal_(work, gain, generator=generator)
            chunk.copy_(work)
    return tensor


def _delta_orthogonal_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 3:
        raise InitlabError(
            f"delta_orthogonal is for convolution kernels (>= 3 dims), got shape {tuple(tensor.shape)}; "
            "use 'orthogonal' for matrices"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        tensor.zero_()
        centre = tuple((k - 1) // 2 for k in tensor.shape[2:])
        for block in _chunks(tensor, fans):  # per group: each group's map is an isometry
            work = torch.empty(block.shape[:2], dtype=_work_dtype(tensor))
            nn.init.orthogonal_(work, gain, generator=generator)
            block[(slice(None), slice(None), *centre)] = work.to(tensor.dtype)
    return tensor


def _identity_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                    generator: torch.Generator | None = None, groups: int | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"identity needs a tensor with >= 2 dims, got shape {tuple(tensor.shape)}"
        )
    if tensor.dim() > 2:
        return _dirac_apply(tensor, fans=fans, gain=gain, groups=groups)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        for chunk in _chunks(tensor, fans):
            chunk.zero_().diagonal().fill_(gain)  # eye * gain, rounded once, no buffer
    return tensor


def _dirac_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                 generator: torch.Generator | None = None, groups: int | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() not in (3, 4, 5):
        raise InitlabError(
            f"dirac is for Conv1d/2d/3d kernels (3-5 dims), got shape {tuple(tensor.shape)}; "
            "use 'identity' for matrices"
        )
    if groups is None:  # a grouped conv's fans are per group
        groups = _blocks(tensor, fans)
    if tensor.shape[0] % groups:
        raise InitlabError(
            f"dirac: {tensor.shape[0]} output channels do not split into {groups} groups"
        )
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        nn.init.dirac_(tensor, groups)
        return tensor.mul_(gain)


def _sparse_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                  generator: torch.Generator | None = None, sparsity: float = 0.9,
                  std: float = 0.01) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() != 2:
        raise InitlabError(
            f"sparse needs a 2-D weight matrix, got shape {tuple(tensor.shape)}; "
            "it zeroes a fraction of each column (Martens 2010)"
        )
    if not 0.0 <= sparsity < 1.0:
        raise InitlabError(f"sparse needs 0 <= sparsity < 1, got {sparsity}")
    if tensor.is_meta:
        return tensor
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    with torch.no_grad():
        # torch.nn.init.sparse_ draws its zero pattern from the global RNG (randperm without the
        # generator); here every draw comes from `generator`: a random permutation per column.
        # Values in float32 (float64 for float64 tensors); the pattern's draws are float32 always.
        values = torch.empty(rows, cols, dtype=_work_dtype(tensor))
        values.normal_(0.0, std, generator=generator)
        order = torch.rand(rows, cols, generator=generator).argsort(dim=0)
        values.scatter_(0, order[:num_zeros], 0.0)
        tensor.copy_(values)
    return tensor


def hadamard(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two), entries +-1.

    >>> hadamard(2)
    tensor([[ 1.,  1.],
            [ 1., -1.]])
    """
    if n < 1 or n & (n - 1):
        raise InitlabError(f"Hadamard order must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def zero_matrix(m: int, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""ZerO's deterministic ``(m, n)`` matrix (Zhao et al. 2022, Algorithm 1, official code).

    Identity when ``m == n``; partial identity ``eye(m, n)`` when ``m < n``; when ``m > n``,
    :math:`H_p[:m, :n] / \sqrt{p}` with :math:`p = 2^{\lceil \log_2 m \rceil}` and :math:`H_p` the
    Sylvester Hadamard matrix (the paper prints the constant :math:`2^{-(k-1)/2}`, a factor
    :math:`\sqrt{2}` larger; the official code, which we follow, uses :math:`1/\sqrt{p}`).

    >>> zero_matrix(3, 2)
    tensor([[ 0.5000,  0.5000],
            [ 0.5000, -0.5000],
            [ 0.5000,  0.5000]])
    """
    if m <= n:
        return torch.eye(m, n, dtype=dtype)
    p = 1 << math.ceil(math.log2(m))
    return hadamard(p, dtype)[:m, :n] / math.sqrt(p)


def _warn_tied(block: torch.Size, whole: torch.Size) -> None:
    """ZerO widening one input to many outputs makes identical units: say so."""
    if block[1] == 1 and block[0] > 1:
        warnings.warn(
            f"ZerO on a weight of shape {tuple(whole)} widens 1 input to {block[0]} outputs: the "
            "Hadamard block's only column is all ones, so those units start identical and, with "
            "nothing random in the init, stay tied (e.g. a stem on 1-channel images). Give this "
            "layer a random scheme, e.g. rules={'<its name>': 'kaiming_normal'}",
            UserWarning,
            stacklevel=4,
        )


def _zero_apply(tensor: torch.Tensor, *, fans: Fans | None = None, gain: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    if tensor.numel() == 0:
        return tensor
    if tensor.dim() < 2:
        raise InitlabError(
            f"ZerO needs a weight with >= 2 dims, got shape {tuple(tensor.shape)}; biases are zeros"
        )
    if tensor.is_meta:
        return tensor
    dtype = torch.float64  # exact +-1 / sqrt(p) entries, rounded once to the tensor's dtype
    with torch.no_grad():
        if tensor.dim() == 2:
            for chunk in _chunks(tensor, fans):
                _warn_tied(chunk.shape, tensor.shape)
                if chunk.shape[0] <= chunk.shape[1]:  # (partial) identity: written in place
                    chunk.zero_().diagonal().fill_(1.0)
                else:
                    chunk.copy_(zero_matrix(*chunk.shape, dtype))
            return tensor
        tensor.zero_()
        centre = tuple(k // 2 for k in tensor.shape[2:])
        for block in _chunks(tensor, fans):  # per group of a grouped conv
            _warn_tied(block.shape, tensor.shape)
            block[(slice(None), slice(None), *centre)] = zero_matrix(*block.shape[:2], dtype).to(
                tensor.dtype
            )
    return tensor
