"""Probes: hooks that measure every activation call of one forward/backward pass, then come off.

:class:`Probe` is a context manager. Inside it, each call of

* an activation **module** (``nn.ReLU``, ``nn.Tanh``...; a module reused three times gives three
  records), caught by a forward hook, and
* a **functional** activation (``torch.tanh``, ``F.relu``, ``x.relu_()``...), caught by a
  :class:`~torch.overrides.TorchFunctionMode` (as :func:`initlab.graph.trace` does),

is summarized *at once* (:func:`tensor_stats`), before any later in-place operation can change
the tensor: ``nn.ReLU(inplace=True)`` overwrites its input, so the pre-activation of the layer
before it is summarized in that layer's forward hook, and the activation in the ReLU's hook.
Gradients with respect to each activation come from ``tensor.register_hook`` on the captured
output, never from full backward hooks on modules (``register_full_backward_hook`` raises on
in-place outputs and reports one gradient per module, not per call). For a tensor changed in
place after the hook was registered, PyTorch passes the gradient with respect to the value at
registration, which is the one we want.

Every handle (module hooks, tensor hooks) is removed in ``finally``; nothing is written onto
modules or parameters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..graph import ACTIVATION_FUNCTIONS, ADD_FUNCTIONS, Graph, activation_module_name
from ..hooks import forward_hooks

__all__ = [
    "BOUNDED",
    "RELU_LIKE",
    "SATURATION_THRESHOLD",
    "CallRecord",
    "Probe",
    "TensorStats",
    "attention_stats",
    "tensor_stats",
]

#: bounded activations whose units saturate; values are their output range ``(lo, hi)``
BOUNDED: dict[str, tuple[float, float]] = {
    "tanh": (-1.0, 1.0), "hardtanh": (-1.0, 1.0), "softsign": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0), "hardsigmoid": (0.0, 1.0),
}  # fmt: skip

#: activations whose units can die (output exactly zero for every example)
RELU_LIKE = frozenset({"relu", "relu6"})

#: a tanh unit is saturated when ``|t| > 0.97`` (the lecture plots ``|h| > 0.99``).
#: There ``tanh'(z) = 1 - t^2 < 0.059``: the unit passes under 6% of the gradient. For other
#: bounded activations the same rule is applied to the distance from the nearest bound,
#: rescaled to tanh's range: a sigmoid unit is saturated when ``s < 0.015`` or ``s > 0.985``.
SATURATION_THRESHOLD = 0.97


@dataclass
class TensorStats:
    """A summary of one tensor (all of it, NaN/inf counted, not dropped).

    Attributes:
        numel: number of elements; ``nonfinite`` how many are NaN or inf.
        mean, std, rms, absmax: over the finite elements.
        hist: ``(counts, lo, hi)``: ``bins`` equal bins over ``[lo, hi]`` of the finite values.
        saturated_frac: for bounded activations, the fraction of elements near a bound.
        dead_frac: the fraction of units that are zero (ReLU-like) or saturated (bounded) for
            every example of the batch; a unit is a feature (last dim) for 2-D and 3-D tensors
            and a channel (dim 1) for 4-D and 5-D ones.
        units: the number of units ``dead_frac`` counted.
        cosine: the mean cosine similarity between the examples of the batch (each flattened),
            off the diagonal: near 1 when a deep stack maps all inputs to one direction
            (correlation collapse; Poole et al. 2016, Schoenholz et al. 2017).
    """

    numel: int
    nonfinite: int
    mean: float
    std: float
    rms: float
    absmax: float
    hist: tuple[list[float], float, float]
    saturated_frac: float | None = None
    dead_frac: float | None = None
    units: int | None = None
    cosine: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (histogram included)."""
        return {
            "numel": self.numel, "nonfinite": self.nonfinite, "mean": _f(self.mean),
            "std": _f(self.std), "rms": _f(self.rms), "absmax": _f(self.absmax),
            "hist": {"counts": self.hist[0], "lo": _f(self.hist[1]), "hi": _f(self.hist[2])},
            "saturated_frac": _f(self.saturated_frac), "dead_frac": _f(self.dead_frac),
            "cosine": _f(self.cosine),
        }  # fmt: skip


def _f(x: float | None) -> float | str | None:
    """JSON-safe float: NaN and inf as strings."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _units(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(units, everything else)``."""
    if x.dim() <= 1:
        return x.reshape(-1, 1)
    if x.dim() >= 4:
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    return x.reshape(-1, x.shape[-1]).T


def _saturated(x: torch.Tensor, act: str) -> torch.Tensor:
    lo, hi = BOUNDED[act]
    half = (hi - lo) / 2
    # distance from the nearest bound, in tanh units: saturated when < 1 - 0.97
    dist = torch.minimum(x - lo, hi - x) / half
    return dist < (1.0 - SATURATION_THRESHOLD)


@torch.no_grad()
def tensor_stats(t: torch.Tensor, act: str | None = None, bins: int = 50) -> TensorStats:
    """Summarize ``t``; ``act`` (the activation that produced it) adds saturation and dead units.

    >>> s = tensor_stats(torch.tensor([[0.0, 0.99], [0.0, -0.5]]), act="tanh")
    >>> s.saturated_frac, s.dead_frac
    (0.25, 0.0)
    >>> tensor_stats(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), act="relu").dead_frac
    0.5
    """
    x = t.detach().float()
    finite = torch.isfinite(x)
    nonfinite = int(x.numel() - finite.sum())
    xf = x[finite] if nonfinite else x.reshape(-1)
    if xf.numel() == 0:
        nan = float("nan")
        return TensorStats(x.numel(), nonfinite, nan, nan, nan, nan, ([], nan, nan))
    mean = float(xf.mean())
    std = float(xf.std()) if xf.numel() > 1 else 0.0
    rms = float(xf.pow(2).mean().sqrt())
    lo, hi = float(xf.min()), float(xf.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(xf, bins=bins, min=lo, max=hi).tolist()
    stats = TensorStats(
        x.numel(), nonfinite, mean, std, rms, max(abs(lo), abs(hi)), (counts, lo, hi)
    )
    if x.dim() >= 2 and x.shape[0] > 1 and not nonfinite:
        rows = x.reshape(x.shape[0], -1)
        norms = rows.norm(dim=1, keepdim=True)
        keep = norms.squeeze(1) > 0
        n = int(keep.sum())
        if n > 1:
            total = (rows[keep] / norms[keep]).sum(0)
            stats.cosine = float((total.dot(total) - n) / (n * (n - 1)))
    if act in BOUNDED:
        sat = _saturated(x, act)
        stats.saturated_frac = float(sat.float().mean())
        u = _units(sat)
        stats.dead_frac, stats.units = float(u.all(dim=1).float().mean()), u.shape[0]
    elif act in RELU_LIKE:
        u = _units(x <= 0)
        stats.dead_frac, stats.units = float(u.all(dim=1).float().mean()), u.shape[0]
    return stats


@dataclass
class CallRecord:
    """One call of an activation (or one output of a traced layer) in the probed pass.

    Attributes:
        name: a unique display name: the module's name, or ``"<layer>/<fn>"`` for a functional
            activation after ``<layer>``; ``"#k"`` is appended for the k-th call of a reused one.
        kind: ``"activation"``, ``"layer"`` (a traced layer's output, i.e. its pre-activation),
            ``"residual"`` (the output of ``skip + branch``) or ``"attention"`` (an
            ``nn.MultiheadAttention`` call: :func:`attention_stats` in ``extra``).
        act: the activation's canonical name (``None`` for layer outputs).
        after: the last weight or embedding layer that ran before this call.
        module: the module's qualified name (``None`` for functional activations).
        index: position in the forward pass.
        out: statistics of the output; ``grad``: of the gradient w.r.t. the output.
        branch: for residual records, statistics of the branch's output.
    """

    name: str
    kind: str
    act: str | None
    after: str | None
    module: str | None
    index: int
    out: TensorStats
    grad: TensorStats | None = None
    branch: TensorStats | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _first_tensor(output: object) -> torch.Tensor | None:
    for t in tree_flatten(output)[0]:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t
    return None


def _channel_moments(x: torch.Tensor) -> tuple[float, float]:
    """Brock et al. (2021)'s average channel squared mean and average channel variance."""
    u = _units(x.detach().float())
    return float(u.mean(dim=1).pow(2).mean()), float(u.var(dim=1, unbiased=False).mean())


class Probe(TorchFunctionMode):
    """Record every activation call and traced layer output of the passes run inside it.

    Args:
        model: the model (hooks go on its modules and come off on exit).
        graph: its traced :class:`~initlab.graph.Graph` (layer names, residual branches).
        bins: histogram bins.
        grads: also record gradients w.r.t. activation outputs (``tensor.register_hook``).

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    >>> from initlab.graph import trace
    >>> x = torch.randn(16, 4)
    >>> with Probe(net, trace(net, x)) as probe:
    ...     net(x).sum().backward()
    >>> [(r.name, r.kind, r.after) for r in probe.records]
    [('0', 'layer', '0'), ('1', 'activation', '0'), ('2', 'layer', '2')]
    >>> probe.records[1].grad is not None
    True
    """

    def __init__(
        self, model: nn.Module, graph: Graph, *, bins: int = 50, grads: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.graph = graph
        self.bins = bins
        self.grads = grads
        self.records: list[CallRecord] = []
        self._handles: list[Any] = []  # tensor hooks (gradients), removed on exit or by close()
        self._module_hooks = contextlib.ExitStack()
        self._depth = 0
        self._after: str | None = None
        self._branch_last = {b.last for b in graph.branches}
        self._branch_out: dict[int, tuple[torch.Tensor, str]] = {}
        self._names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}

    # -- lifecycle
    def __enter__(self) -> Probe:
        watched = []
        for name, module in self.model.named_modules():
            layer = self.graph.layers.get(name)
            if _module_activation(module) is not None or (
                layer is not None and layer.module is module
            ):
                watched.append(module)
        with contextlib.ExitStack() as stack:  # module hooks come off if entering fails
            stack.enter_context(forward_hooks(watched, self._post, pre=self._pre))
            super().__enter__()
            self._module_hooks = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._module_hooks.close()
            self._remove()
            self._branch_out.clear()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def close(self) -> None:
        """Remove the tensor hooks still pending (after the backward pass)."""
        self._remove()

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self.records)

    # -- hooks
    def _pre(self, module: nn.Module, args: tuple) -> None:
        if self._depth == 0 and isinstance(module, nn.MultiheadAttention) and args:
            self._attention(module, args)
        self._depth += 1

    def _post(self, module: nn.Module, args: tuple, output: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        name = self._names.get(id(module), type(module).__name__)
        t = _first_tensor(output)
        if t is None:
            return
        act = _module_activation(module)
        if act is not None:
            self._record(name, "activation", act, name, t)
            return
        layer = self.graph.layers.get(name)
        if layer is not None and layer.kind in ("weight", "embedding"):
            self._after = name
        self._record(name, "layer", None, None, t, grad=False)
        if name in self._branch_last:
            self._branch_out[id(t)] = (t, name)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._depth > 0:
            return out
        act = ACTIVATION_FUNCTIONS.get(func)
        if act is not None and isinstance(out, torch.Tensor):
            self._record(f"{self._after or 'input'}/{act}", "activation", act, None, out)
        elif func in ADD_FUNCTIONS and self._branch_out and isinstance(out, torch.Tensor):
            for a in tree_flatten((args, kwargs))[0]:
                hit = self._branch_out.get(id(a)) if isinstance(a, torch.Tensor) else None
                if hit is not None and hit[0] is a:
                    self._residual(hit[1], a, out)
                    break
        return out

    # -- records
    def _record(self, name: str, kind: str, act: str | None, module: str | None,
                t: torch.Tensor, grad: bool = True) -> None:  # fmt: skip
        rec = CallRecord(name, kind, act, self._after, module, len(self.records),
                         tensor_stats(t, act, self.bins))  # fmt: skip
        self.records.append(rec)
        if grad and self.grads and t.requires_grad:

            def hook(g: torch.Tensor, rec: CallRecord = rec) -> None:
                rec.grad = tensor_stats(g, None, self.bins)

            self._handles.append(t.register_hook(hook))

    def _attention(self, module: nn.MultiheadAttention, args: tuple) -> None:
        query = args[0]
        key = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else query
        if not isinstance(query, torch.Tensor) or not query.is_floating_point():
            return
        try:
            extra = attention_stats(module, query, key)
        except (RuntimeError, ValueError, TypeError):  # an unusual MHA configuration: skip it
            return
        name = self._names.get(id(module), "attention")
        rec = CallRecord(name, "attention", None, self._after, name, len(self.records),
                         tensor_stats(query, None, self.bins))  # fmt: skip
        rec.extra = extra
        self.records.append(rec)

    def _residual(self, branch: str, branch_out: torch.Tensor, out: torch.Tensor) -> None:
        sq_mean, var = _channel_moments(out)
        rec = CallRecord(f"{branch}/+skip", "residual", None, self._after, None, len(self.records),
                         tensor_stats(out, None, self.bins))  # fmt: skip
        rec.branch = tensor_stats(branch_out, None, self.bins)
        rec.extra = {"avg_channel_sq_mean": sq_mean, "avg_channel_var": var,
                     "branch_var": _channel_moments(branch_out)[1]}  # fmt: skip
        self.records.append(rec)


def _token_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity between the tokens of each sequence ``(B, T, D)``, off the diagonal."""
    t = x.shape[1]
    if t < 2:
        return float("nan")
    u = F.normalize(x.float(), dim=-1)
    s = u.sum(dim=1)
    return float(((s * s).sum(-1) - t).mean() / (t * (t - 1)))


@torch.no_grad()
def attention_stats(
    mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor
) -> dict[str, float]:
    """Attention-logit scale and entropy of ``mha`` on ``(query, key)``, masks ignored.

    Recomputes ``q = query W_q^T + b_q`` and ``k = key W_k^T + b_k`` per head, the logits
    ``q k^T / sqrt(d_head)``, their std, and the mean entropy of the softmax rows beside its
    maximum ``log T`` (uniform attention; at init a healthy model attends broadly: entropy near
    ``log T``, logit std below ~1). ``token_cosine`` is the mean cosine between the query tokens:
    near 1 means the token representations collapsed (Noci et al. 2022, "Signal propagation in
    transformers: rank collapse").
    """
    if not mha.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    if query.dim() == 2:
        query, key = query.unsqueeze(0), key.unsqueeze(0)
    e, h = mha.embed_dim, mha.num_heads
    if mha.in_proj_weight is not None:
        wq, wk = mha.in_proj_weight[:e], mha.in_proj_weight[e : 2 * e]
    else:
        wq, wk = mha.q_proj_weight, mha.k_proj_weight
    bq = bk = None
    if mha.in_proj_bias is not None:
        bq, bk = mha.in_proj_bias[:e], mha.in_proj_bias[e : 2 * e]
    q = F.linear(query.float(), wq.float(), None if bq is None else bq.float())
    k = F.linear(key.float(), wk.float(), None if bk is None else bk.float())
    bsz, tq, tk, d = q.shape[0], q.shape[1], k.shape[1], e // h
    q = q.view(bsz, tq, h, d).transpose(1, 2)
    k = k.view(bsz, tk, h, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    p = logits.softmax(-1)
    entropy = float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
    return {"logit_std": float(logits.std()), "entropy": entropy, "max_entropy": math.log(tk),
            "token_cosine": _token_cosine(query)}  # fmt: skip


def _module_activation(module: nn.Module) -> str | None:
    """The activation a module computes, named as :mod:`initlab.graph` names it (one table for
    the whole library: transformers' ``NewGELUActivation`` is ``gelu_tanh``, not the ``tanh``
    inside it); ``None`` for anything else (``nn.Identity`` included)."""
    if isinstance(module, nn.PReLU):  # learnable slope: has a parameter, still an activation
        return "leaky_relu"
    name = activation_module_name(module)
    return None if name in (None, "linear") else name


def unique_names(records: list[CallRecord]) -> None:
    """Append ``#k`` to the names of records that occur more than once (a reused module)."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[(r.kind, r.name)] = counts.get((r.kind, r.name), 0) + 1
    seen: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r.kind, r.name)
        if counts[key] > 1:
            r.name = f"{r.name}#{seen.get(key, 0)}"
            seen[key] = seen.get(key, 0) + 1
