r"""LSUV: layer-sequential unit-variance initialization (Mishkin & Matas, ICLR 2016).

Algorithm (the paper's Algorithm 1, as in ``ducha-aiki/LSUV-pytorch``):

1. Pre-initialize every weight layer orthonormally: the weight seen as ``(out, fan_in)`` per chunk
   (each LSTM gate, each of q/k/v), Haar-orthogonal rows or columns, gain 1; its biases 0.
2. In forward order, for each weight layer :math:`l` with output :math:`z_l` (pre-activation, before
   any normalization layer), on one fixed batch:

   .. math::  \text{while } |\operatorname{Var}(z_l) - v^*| > \text{tol}:\quad
              W_l \leftarrow W_l \sqrt{v^* / \operatorname{Var}(z_l)}

   at most ``max_iters`` times. :math:`\operatorname{Var}` is one number over the whole output
   tensor (all calls of the layer pooled).

Deviations from the official code (each deliberate):

* **Order**: execution order from :func:`initlab.graph.trace`, not registration order, and every
  layer is measured (the PyTorch port since 2020 and the PyPI package never measure the first layer
  and land later corrections on the first conv: bugs, not copied).
* **Criterion**: on the variance, ``|var - target_var| <= tol`` (default ``tol=0.1``, 10 iterations
  as the PyTorch port; that port compares the *std* to 1 with tolerance 0.1; Caffe compares the
  variance with 0.02, 20 iterations and a fresh batch per attempt).
* **Zero / NaN variance** is an error naming the layer, or with ``on_zero="skip"`` a warning and
  the layer is left as it is (no official version guards these: zero variance gives weights x 1e8).
* **Layers called several times** (shared weights): the variance pools every call's output.
* **Any weight layer the graph knows** (conv, linear, MHA, RNN...): all its ``dim >= 2`` tensors
  are pre-initialized; the rescaling acts on the matrices the output is linear in (an attention
  layer's ``out_proj`` alone, see :func:`_scaled`; every matrix of other layers). The official
  code handles conv and linear only.
* **BatchNorm**: normalization layers are not rescaled (as official) and run on batch statistics
  during the passes; their running statistics (and every other buffer) are restored afterwards,
  and dropout is off (the model runs in eval mode except for the norms).
* **Frozen parameters** (``requires_grad=False``) are left alone, as :func:`initlab.init`,
  GradInit and MetaInit leave them: a layer with a frozen matrix is neither pre-initialized nor
  rescaled (its frozen parameters are listed in :attr:`LSUVResult.frozen`), and a frozen bias is
  not zeroed. ``include_frozen=True`` treats them as any other.
* **Distributed**: under ``torch.distributed`` each rank's (sum, sum of squares, count) are
  all-reduced, so the variance is that of the global batch and all ranks scale identically.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InitlabError, check_choice
from ..graph import is_norm, trace
from ..hooks import eval_mode, forward_hooks
from ..placement import check_placement
from ..rng import generator
from ..schemes import orthogonal_
from ..transaction import transaction
from ._common import all_reduce_sum_, check_finite, progress_bar

__all__ = ["LSUVLayer", "LSUVResult", "lsuv"]


@dataclass(frozen=True)
class LSUVLayer:
    """What LSUV did to one layer.

    Attributes:
        name: the layer's qualified module name.
        std_before: output std after the orthonormal pre-init, before any rescaling.
        std: output std after the last rescaling (the final measurement).
        iterations: rescalings applied (0: already within tolerance).
        scale: product of all factors applied to its weights.
        skipped: ``True`` when the layer was skipped (zero/NaN variance with ``on_zero="skip"``).
    """

    name: str
    std_before: float
    std: float
    iterations: int
    scale: float
    skipped: bool = False


@dataclass(frozen=True)
class LSUVResult:
    """Per-layer outcome of :func:`lsuv`, in forward order.

    ``frozen`` names the frozen parameters (``requires_grad=False``) LSUV left as they were; a
    layer with a frozen matrix is not in ``layers`` (it was neither pre-initialized nor rescaled).
    """

    layers: tuple[LSUVLayer, ...]
    target_var: float
    tol: float
    frozen: tuple[str, ...] = ()

    @property
    def stds(self) -> dict[str, float]:
        """Final output std per layer."""
        return {la.name: la.std for la in self.layers}

    @property
    def iterations(self) -> dict[str, int]:
        """Rescalings per layer."""
        return {la.name: la.iterations for la in self.layers}

    @property
    def forward_passes(self) -> int:
        """Forward passes LSUV ran (its cost)."""
        return sum(la.iterations + 1 for la in self.layers)


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _input_of(data: Any) -> Any:
    """The model input from ``data``: a tensor/tuple/dict is used as is; a loader gives its first batch."""
    if isinstance(data, (torch.Tensor, dict)):
        return data
    if isinstance(data, tuple):
        return data  # positional args of one forward call
    if isinstance(data, Iterable):
        batch = next(iter(data), None)
        if batch is None:
            raise InitlabError("lsuv: data is an empty iterable; pass one input batch")
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0]  # an (input, target) pair
        return batch
    raise InitlabError(
        f"lsuv: data must be an input batch (tensor, tuple, dict) or a loader, got {type(data).__name__}"
    )


def _weights(module: nn.Module) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """(owner, leaf name, local name, tensor) of a layer's matrices (``dim >= 2``), MHA's out_proj included."""
    found = []
    for local, p in module.named_parameters():
        if p.dim() >= 2:
            owner_name, _, leaf = local.rpartition(".")
            found.append(
                (module.get_submodule(owner_name) if owner_name else module, leaf, local, p)
            )
    return found


def _scaled(module: nn.Module) -> list[torch.Tensor]:
    r"""The matrices LSUV rescales: those the layer's output is linear in.

    A linear or conv layer's output is linear in its one weight (the bias is 0 after the
    pre-init). An attention layer's is linear only in its output projection: scaling the query
    and key chunks of ``in_proj_weight`` by :math:`c` scales the scores by :math:`c^2` and
    reshapes the softmax, so the output std stops following :math:`c` and the iteration drifts
    (on ``nn.TransformerEncoder`` it fell from 0.64 to 0.0011 in 10 steps). When the module owns
    an ``out_proj`` linear layer among its matrices, only that one is scaled.
    """
    mats = [p for *_, p in _weights(module)]
    out_proj = getattr(module, "out_proj", None)
    if (
        isinstance(out_proj, nn.Linear)
        and len(mats) > 1
        and any(p is out_proj.weight for p in mats)
    ):
        return [out_proj.weight]
    return mats


def lsuv(
    model: nn.Module,
    data: Any,
    *,
    target_var: float = 1.0,
    tol: float = 0.1,
    max_iters: int = 10,
    orthogonal: bool = True,
    example: Any = None,
    on_zero: Literal["error", "skip"] = "error",
    seed: int = 0,
    progress: bool | None = None,
    include_frozen: bool = False,
) -> LSUVResult:
    """Layer-sequential unit-variance init, in place and transactional. See the module docstring.

    Args:
        model: the network.
        data: one input batch (a tensor, a tuple of positional args, a dict of kwargs), or an
            iterable (a list, a DataLoader) whose first batch is used (an ``(input, target)``
            pair gives its input). One fixed batch for every measurement, as the PyTorch port.
        target_var: the output variance each layer is scaled to.
        tol: stop when ``|var - target_var| <= tol``.
        max_iters: most rescalings per layer.
        orthogonal: orthonormal pre-init (per chunk, gain 1, biases 0) before rescaling.
        example: the input used to trace the layer order (default: the batch).
        on_zero: ``"error"`` (default) or ``"skip"`` (warn) for a layer whose output variance is
            zero or NaN.
        seed: seed of the orthogonal draws (one generator per parameter name).
        progress: show a progress bar (``None``: when stderr is a TTY).
        include_frozen: also pre-initialize and rescale frozen parameters (default: leave them
            alone and list them in the result's ``frozen``).

    Returns:
        :class:`LSUVResult` with the per-layer stds and iterations.

    >>> net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    >>> x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    >>> res = lsuv(net, x)
    >>> all(abs(s**2 - 1) <= 0.1 for s in res.stds.values())
    True
    """
    check_placement(model, example, who="initlab.lsuv")
    check_choice("on_zero", on_zero, ["error", "skip"])
    if target_var <= 0 or not math.isfinite(target_var):
        raise InitlabError(f"lsuv: target_var must be a positive finite number, got {target_var}")
    if tol < 0 or max_iters < 0:
        raise InitlabError(
            f"lsuv: tol and max_iters must be >= 0, got tol={tol}, max_iters={max_iters}"
        )
    batch = _input_of(data)
    check_finite(batch, "lsuv: the data batch")
    graph = trace(model, batch if example is None else example)
    layers = [
        la for la in graph.order() if la.kind == "weight" and la.calls > 0 and _weights(la.module)
    ]
    frozen = [] if include_frozen else _frozen_names(model)
    frozen_ids = {id(model.get_parameter(n)) for n in frozen}
    layers = [la for la in layers if all(id(p) not in frozen_ids for *_, p in _weights(la.module))]
    if not layers and frozen:
        raise InitlabError(
            "lsuv: every weight layer the batch reaches is frozen (requires_grad=False); "
            "unfreeze them or pass include_frozen=True"
        )
    if not layers:
        raise InitlabError(
            "lsuv: the model has no weight layer (linear/conv/...) that the batch reaches"
        )

    stats = torch.zeros(3, dtype=torch.float64)  # sum, sum of squares, count
    current: list[nn.Module | None] = [None]

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        if module is not current[0]:
            return
        t = _first_tensor(out)
        if t is None:
            return
        t = t.detach().to(torch.float64)
        stats[0] += t.sum().cpu()
        stats[1] += (t * t).sum().cpu()
        stats[2] += t.numel()

    def measure(module: nn.Module) -> float:
        stats.zero_()
        current[0] = module
        with torch.no_grad():
            if isinstance(batch, dict):
                model(**batch)
            else:
                model(*(batch if isinstance(batch, tuple) else (batch,)))
        all_reduce_sum_(stats)
        s, ss, n = stats.tolist()
        if n == 0:
            return float("nan")
        mean = s / n
        return max(ss / n - mean * mean, 0.0)

    out: list[LSUVLayer] = []
    # eval mode for dropout, norms in train mode: batch statistics, as the network will see in
    # training (their running statistics are put back below)
    with (
        transaction(model),
        forward_hooks((la.module for la in layers), hook),
        eval_mode(model, train_if=is_norm),
    ):
        buffers = {id(b): (b, b.detach().clone()) for b in model.buffers()}
        try:
            if orthogonal:
                with torch.no_grad():
                    for la in layers:
                        for owner, leaf, local, _p in _weights(la.module):
                            full = f"{la.name}.{local}" if la.name else local
                            orthogonal_(owner, name=leaf, generator=generator(seed, "lsuv", full))
                        for pname, p in la.module.named_parameters():
                            if id(p) in frozen_ids:
                                continue
                            if p.dim() < 2 and "bias" in pname.rsplit(".", 1)[-1]:
                                p.zero_()
            for i in progress_bar(len(layers), progress, "lsuv"):
                la = layers[i]
                var = measure(la.module)
                before = math.sqrt(var) if math.isfinite(var) else var
                scale, iters, skipped = 1.0, 0, False
                while True:
                    if not math.isfinite(var) or var <= 0.0:
                        what = "zero" if var == 0.0 else "NaN/inf"
                        msg = (
                            f"lsuv: layer {la.name!r} ({type(la.module).__name__}) has {what} output "
                            f"variance on the batch"
                        )
                        if on_zero == "error":
                            raise InitlabError(
                                msg
                                + "; a zero-initialized layer (e.g. a Fixup branch end) or dead units "
                                "upstream cannot be rescaled. Pass on_zero='skip' to leave it as it is"
                            )
                        warnings.warn(msg + "; skipped (on_zero='skip')", stacklevel=2)
                        skipped = True
                        break
                    if abs(var - target_var) <= tol or iters >= max_iters:
                        break
                    factor = math.sqrt(target_var / var)
                    with torch.no_grad():
                        for p in _scaled(la.module):
                            p.mul_(factor)
                    scale *= factor
                    iters += 1
                    var = measure(la.module)
                std = math.sqrt(var) if math.isfinite(var) and var >= 0 else var
                out.append(LSUVLayer(la.name, before, std, iters, scale, skipped))
        finally:
            with torch.no_grad():
                for b, saved in buffers.values():
                    b.copy_(saved)
    return LSUVResult(tuple(out), float(target_var), float(tol), tuple(frozen))


def _frozen_names(model: nn.Module) -> list[str]:
    """Qualified names of the model's frozen parameters (``requires_grad=False``), tied ones once."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]
