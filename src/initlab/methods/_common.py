"""Small pieces the learned-init methods share: batches, progress bars, all-reduce, finiteness.

Nothing here touches a model's state; the methods own their transactions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InitlabError

__all__ = [
    "Batches",
    "all_reduce_mean_",
    "all_reduce_sum_",
    "check_finite",
    "distributed",
    "norm_param_names",
    "progress_bar",
    "split_batch",
]


def distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialized with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op without a process group)."""
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over ranks in place (a no-op without a process group)."""
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def progress_bar(total: int, enabled: bool | None, desc: str) -> Any:
    """A tqdm bar over ``range(total)``; ``enabled=None`` shows it only when stderr is a TTY.

    Falls back to a plain ``range`` when tqdm is not installed.
    """
    show = sys.stderr.isatty() if enabled is None else bool(enabled)
    if not show:
        return range(total)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional nicety
        return range(total)
    return tqdm(range(total), desc=desc, leave=False)


def check_finite(x: object, what: str) -> None:
    """Raise :class:`InitlabError` if any floating tensor inside ``x`` holds NaN or inf."""
    tensors: list[torch.Tensor] = []
    if isinstance(x, torch.Tensor):
        tensors = [x]
    elif isinstance(x, (tuple, list)):
        tensors = [t for t in x if isinstance(t, torch.Tensor)]
    elif isinstance(x, dict):
        tensors = [t for t in x.values() if isinstance(t, torch.Tensor)]
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise InitlabError(
                f"{what} holds {bad} NaN/inf value(s) out of {t.numel()}; clean or impute the data "
                "before initializing (a data-driven init cannot learn from non-finite inputs)"
            )


def split_batch(batch: object, what: str) -> tuple[Any, Any]:
    """``(input, target)`` from a batch: a pair (a DataLoader's list/tuple), or a dict of keyword
    args alone (``model(**batch)``, e.g. with ``labels`` inside), which gives ``(batch, None)``."""
    if isinstance(batch, Mapping):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return x, y
    raise InitlabError(
        f"{what} must yield (input, target) pairs or dicts of keyword args; got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


class Batches:
    """Cycle through ``data`` (a DataLoader, a list of batches, a generator) forever.

    Re-iterable sources restart when exhausted (a new epoch); a one-shot iterator that runs dry
    raises :class:`InitlabError` saying how many batches it gave.
    """

    def __init__(self, data: Iterable[Any], what: str = "data") -> None:
        if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
            raise InitlabError(
                f"{what} must be an iterable of (input, target) batches, got {type(data).__name__}"
            )
        self.data = data
        self.what = what
        self.it: Iterator[Any] = iter(data)
        self.one_shot = self.it is data
        self.count = 0

    def __next__(self) -> Any:
        try:
            batch = next(self.it)
        except StopIteration:
            if self.one_shot or self.count == 0:
                raise InitlabError(
                    f"{self.what} ran out after {self.count} batch(es); pass a re-iterable source "
                    "(a DataLoader or a list) or a longer generator"
                ) from None
            self.it = iter(self.data)
            batch = next(self.it)
        self.count += 1
        return batch

    def __iter__(self) -> Batches:
        return self


def norm_param_names(model: nn.Module) -> set[str]:
    """Qualified names of parameters owned by normalization layers (BatchNorm, LayerNorm, ...)."""
    from ..graph import is_norm

    names: set[str] = set()
    for mname, module in model.named_modules():
        if is_norm(module):
            for pname, _ in module.named_parameters(recurse=False):
                names.add(f"{mname}.{pname}" if mname else pname)
    return names


def to_device(x: object, device: torch.device) -> object:
    """Move a tensor / tuple / list / dict of tensors to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x
