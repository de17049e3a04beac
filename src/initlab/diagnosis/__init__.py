"""The doctor: diagnose a network's health at initialization (makemore part 3, in one call).

:func:`doctor` runs one forward/backward pass on a *copy* of the model with probes
(:mod:`~initlab.diagnosis.probes`), optionally over several batches (a confidence band for each
figure) and a few optimizer steps (the true update:data ratio), measures

* the initial loss against the expected one (``log(C)`` for uniform predictions; Karpathy 2019);
* per activation call: mean, std, saturation (``|t| > 0.97``), dead units, histograms, and the
  gradient w.r.t. it; per parameter: gradient norm and std, grad:data, update:data, and the
  weight's std beside the std the initlab plan predicts from its scheme, fans and gain;
* per residual block: Brock et al. (2021)'s average channel squared mean, average channel
  variance and branch variance;
* the input-output Jacobian's mean squared singular value (Hutchinson's estimator with random
  projections through ``torch.func.jvp``) and its largest (power iteration with ``jvp``/``vjp``),

and turns them into :class:`Finding` values (:mod:`~initlab.diagnosis.checks`) in a :class:`Report`.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 5))
>>> x, y = torch.randn(64, 8), torch.randint(0, 5, (64,))
>>> report = doctor(net, x, y)
>>> report.finding("initial_loss").severity
'ok'
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InitlabError
from ..graph import Graph, run_forward, trace
from ..hooks import eval_mode
from ..placement import check_placement
from ..transaction import snapshot
from .checks import CHECKS, THRESHOLDS, Finding, run_checks
from .probes import Probe, unique_names
from .report import Report

__all__ = ["CHECKS", "THRESHOLDS", "Finding", "Report", "doctor"]


def doctor(
    model: nn.Module,
    example: Any,
    target: torch.Tensor | None = None,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    data: Any = None,
    steps: int = 0,
    optimizer: Any = None,
    batches: int = 4,
    plan: Any = None,
    jacobian: bool = True,
    seed: int = 0,
    bins: int = 50,
    setup: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Report:
    """Diagnose ``model`` at initialization; the model is left exactly as it was.

    Args:
        model: any ``nn.Module``; it is deep-copied (or, when it cannot be, snapshotted and
            restored): its weights, buffers, ``.grad``, ``requires_grad``, modes and hooks are
            unchanged afterwards.
        example: the input of one forward call (tensor, tuple of args or dict of kwargs).
        target: labels (integer: classification) or regression targets (float, the output's
            shape). Without one, the loss is cross-entropy against random labels drawn from
            ``seed`` (the expected loss ``log(C)`` does not depend on the labels).
        loss_fn: ``loss_fn(output, target) -> scalar``; default cross-entropy (integer target)
            or MSE (float target).
        data: more batches for a confidence band and for the steps: an iterable of
            ``(input, target)`` pairs (a ``DataLoader``), or an object with ``x_train`` and
            ``y_train`` (:class:`initlab.bench.data.Dataset`), batched like ``example``.
        steps: optimizer steps to run on a copy, to measure update:data ratios.
        optimizer: a ``torch.optim.Optimizer`` class or factory ``fn(params)``, or an instance
            (its class and defaults are reused on the copy); default SGD(lr=0.1), the lecture's.
        batches: at most this many batches of ``data`` are measured (the first is ``example``).
        plan: an :class:`initlab.Plan` giving each weight's predicted std (default:
            ``initlab.plan(model, "kaiming_normal", example=example)``).
        jacobian: estimate the input-output Jacobian's singular values (floating inputs only).
        seed: seeds the random labels, projections and batch order (no global RNG is touched).
        bins: histogram bins.
        setup: what the caller knows of the run (``{"data": "digits", "init": ...}``): shown
            first in every output, beside what the doctor records itself (model, batch,
            batches, steps, optimizer and learning rate, seed, torch/initlab/python versions).
        progress: called as ``progress(description, done, total)`` before each unit of work
            (a batch measured, the Jacobian, an optimizer step), for a progress bar.

    Returns:
        a :class:`Report`.
    """
    if not isinstance(model, nn.Module):
        raise InitlabError(f"doctor expects an nn.Module, got {type(model).__name__}")
    if steps < 0 or batches < 1:
        raise InitlabError(
            f"steps must be >= 0 and batches >= 1, got steps={steps}, batches={batches}"
        )
    check_placement(model, example, who="initlab.doctor")
    say = progress or (lambda desc, done, total: None)
    with _working_copy(model) as work, torch.random.fork_rng(devices=_devices(model)):
        fresh = _fresh_batch_norms(work)  # before the measuring passes update them
        graph = trace(work, example)
        planned = _planned_stds(work, example, graph, plan)
        gen = torch.Generator().manual_seed(seed)
        batch_list = [(example, target), *_batches(data, example, batches - 1, gen)]
        total = len(batch_list) + int(jacobian) + steps
        runs = []
        for i, (x, y) in enumerate(batch_list):
            say(f"measuring batch {i + 1}/{len(batch_list)}", i, total)
            runs.append(_measure(work, graph, x, y, loss_fn, bins, gen, keep_grads=(i == 0)))
        m = _combine(runs)
        m["inputs_nonfinite"] = sum(_nonfinite_count(x) for x, _ in batch_list)
        m["targets_nonfinite"] = sum(_nonfinite_count(y) for _, y in batch_list)
        m["params"] = _param_rows(work, graph, planned, runs[0]["grads"])
        m["plan_scheme"] = getattr(plan, "scheme", None) or "kaiming_normal"
        m["head"] = next((la.name for la in graph.heads), None)
        m["batch_size"] = _batch_size(example)
        if jacobian:
            say("input-output Jacobian", len(batch_list), total)
        m["jacobian"] = _jacobian(work, example, gen, fresh) if jacobian else None
        m["steps"] = []
        opt_text = "none (no optimizer steps)"
        if steps:
            step_data = (
                batch_list
                if data is None
                else batch_list + _batches(data, example, max(0, steps - len(batch_list)), gen)
            )
            first = len(batch_list) + int(jacobian)
            m["steps"], opt_text, m["lr"] = _train(
                work, step_data, steps, loss_fn, optimizer, gen, m,
                lambda k: say(f"optimizer step {k + 1}/{steps}", first + k, total),
            )  # fmt: skip
        say("checks", total, total)
        m["layers"] = _layer_rows(graph, m)
        m["graph"] = graph.summary()
    m["setup"] = _setup(model, m, steps, opt_text, seed, setup)
    findings = run_checks(m)
    return Report(m, findings, model_name=type(model).__name__)


def _nonfinite_count(x: Any) -> int:
    """NaN and inf entries over the floating tensors of ``x``."""
    return sum(int((~torch.isfinite(t)).sum()) for t in _tensors(x) if t.is_floating_point())


def _setup(model: nn.Module, m: dict[str, Any], steps: int, optimizer: str, seed: int,
           given: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The run's set-up, shown first in every output: what ran, on what, with which versions."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("initlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        __version__ = "unknown"

    n_params = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"model": f"{type(model).__name__} ({n_params:,} parameters)"}
    out.update(dict(given or {}))
    out.update({
        "batch": f"{m.get('batches', 1)} batch(es) of {m.get('batch_size')}",
        "steps": steps,
        "optimizer": optimizer,
        "seed": seed,
        "versions": f"initlab {__version__}, torch {torch.__version__}, "
                    f"python {platform.python_version()}",
    })  # fmt: skip
    return out


# --------------------------------------------------------------------------- plumbing


def _devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


@contextlib.contextmanager
def _working_copy(model: nn.Module) -> Iterator[nn.Module]:
    """A deep copy of ``model``; if it cannot be copied, the model itself, restored afterwards."""
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # e.g. modules holding non-copyable handles
        warnings.warn(f"initlab.doctor: deepcopy failed ({exc}); measuring in place and "
                      "restoring the model afterwards", UserWarning, stacklevel=3)  # fmt: skip
        state = snapshot(model)
        try:
            yield model
        finally:
            state.restore()
        return
    for p in work.parameters():
        p.grad = None
    yield work


def _batch_size(example: Any) -> int:
    for t in _tensors(example):
        return int(t.shape[0]) if t.dim() else 1
    return 1


def _tensors(x: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def _batches(data: Any, example: Any, n: int, gen: torch.Generator) -> list[tuple[Any, Any]]:
    if data is None or n <= 0:
        return []
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        size = _batch_size(example)
        out = []
        for _ in range(n):
            idx = torch.randint(0, len(data.x_train), (size,), generator=gen)
            out.append((data.x_train[idx], data.y_train[idx]))
        return out
    out = []
    for item in data:
        if len(out) >= n:
            break
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((item[0], item[1]))
        else:
            out.append((item, None))
    return out


def _planned_stds(
    work: nn.Module, example: Any, graph: Graph, given: Any
) -> dict[str, float | None]:
    try:
        if given is None:
            from ..planning import plan as make_plan

            # the head at gain 1: the checks judge a shrunk head against the unscaled one
            given = make_plan(work, "kaiming_normal", example=example, graph=graph,
                              head_scale=1.0 if graph.heads else None)  # fmt: skip
        # a head the plan shrinks on purpose (gain < 1) is judged against its gain-1 std, as
        # when the doctor plans itself: its first updates are large by design
        return {e.name: e.std / e.gain if "head" in e.roles and e.std and 0 < e.gain < 1
                else e.std for e in given}  # fmt: skip
    except Exception as exc:  # the plan is a bonus; never block the diagnosis
        warnings.warn(f"initlab.doctor: no plan for predicted stds ({exc})", UserWarning,
                      stacklevel=3)  # fmt: skip
        return {}


def _loss(out: torch.Tensor, y: torch.Tensor | None, loss_fn: Callable | None,
          gen: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:  # fmt: skip
    """The loss and what to expect of it."""
    info: dict[str, Any] = {"kind": None, "expected": None, "classes": None}
    if y is not None and not y.is_floating_point():
        classes = out.shape[-1]
        counts = torch.bincount(y.reshape(-1).clamp_min(0), minlength=classes).double()
        p = counts[counts > 0] / counts.sum()
        info.update(kind="classification", classes=classes, expected=math.log(classes),
                    label_entropy=float(-(p * p.log()).sum()))  # fmt: skip
        loss = (
            loss_fn(out, y) if loss_fn else F.cross_entropy(out.reshape(-1, classes), y.reshape(-1))
        )
    elif y is not None:
        yd = y.detach().double()
        info.update(kind="regression", expected=float(yd.pow(2).mean()), target_var=float(yd.var()))
        loss = loss_fn(out, y) if loss_fn else F.mse_loss(out, y)
    elif out.dim() >= 2 and out.is_floating_point():
        classes = out.shape[-1]
        labels = torch.randint(0, classes, out.shape[:-1], generator=gen).to(out.device)
        info.update(kind="classification", classes=classes, expected=math.log(classes),
                    random_labels=True)  # fmt: skip
        loss = loss_fn(out, labels) if loss_fn else F.cross_entropy(out.reshape(-1, classes),
                                                                    labels.reshape(-1))  # fmt: skip
    else:
        loss = 0.5 * out.float().pow(2).mean()
    return loss, info


def _output(out: Any) -> torch.Tensor:
    ts = [t for t in _tensors(out) if t.is_floating_point()]
    if not ts:
        raise InitlabError("the model's output holds no floating tensor to take a loss of")
    return ts[0]


def _measure(work: nn.Module, graph: Graph, x: Any, y: Any, loss_fn: Callable | None, bins: int,
             gen: torch.Generator, keep_grads: bool) -> dict[str, Any]:  # fmt: skip
    for p in work.parameters():
        p.grad = None
    probe = Probe(work, graph, bins=bins)
    with probe:
        out = _output(run_forward(work, x))
        loss, info = _loss(out, y, loss_fn, gen)
        if loss.requires_grad:
            loss.backward()
    unique_names(probe.records)
    info["observed"] = float(loss.detach())
    acts, layers, residual, attention = [], [], [], []
    pre: dict[str, Any] = {}
    for r in probe.records:
        row = _record_row(r)
        if r.kind == "layer":
            layers.append(row)
            pre.setdefault(r.name.split("#")[0], r.out)
        elif r.kind == "attention":
            attention.append({"name": r.name, "after": r.after, **r.extra})
            continue
        elif r.kind == "activation":
            before = pre.get(r.after or "")
            row["pre_std"] = before.std if before is not None else float("nan")
            row["pre_cosine"] = before.cosine if before is not None else None
            acts.append(row)
        else:
            row.update(r.extra)
            residual.append(row)
    grads = {n: (p.grad.detach().clone() if p.grad is not None else None)
             for n, p in work.named_parameters()} if keep_grads else {}  # fmt: skip
    for p in work.parameters():
        p.grad = None
    return {"initial_loss": info, "activations": acts, "layer_outputs": layers,
            "residual": residual, "attention": attention, "grads": grads}  # fmt: skip


def _record_row(r: Any) -> dict[str, Any]:
    s = r.out
    row: dict[str, Any] = {
        "name": r.name, "kind": r.kind, "act": r.act, "after": r.after, "module": r.module,
        "mean": s.mean, "std": s.std, "rms": s.rms, "absmax": s.absmax,
        "saturated_frac": s.saturated_frac, "dead_frac": s.dead_frac, "units": s.units,
        "out_nonfinite": s.nonfinite, "hist": s.hist, "cosine": s.cosine,
    }  # fmt: skip
    if r.grad is not None:
        row.update(grad_rms=r.grad.rms, grad_std=r.grad.std, grad_nonfinite=r.grad.nonfinite,
                   grad_hist=r.grad.hist)  # fmt: skip
    return row


_NUMERIC = ("mean", "std", "rms", "absmax", "saturated_frac", "dead_frac", "grad_rms", "grad_std",
            "cosine", "pre_cosine",
            "avg_channel_sq_mean", "avg_channel_var", "branch_var", "logit_std", "entropy",
            "token_cosine")  # fmt: skip


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over batches, with ``<key>_se`` standard errors when there are several."""
    m = {k: v for k, v in runs[0].items() if k != "grads"}
    n = len(runs)
    losses = [r["initial_loss"]["observed"] for r in runs]
    m["initial_loss"] = dict(runs[0]["initial_loss"])
    m["batches"] = n
    if n > 1:
        m["initial_loss"]["observed"] = sum(losses) / n
        m["initial_loss"]["observed_se"] = _se(losses)
    for key in ("activations", "layer_outputs", "residual", "attention"):
        same = all(len(r[key]) == len(runs[0][key]) for r in runs)
        if n == 1 or not same:
            continue
        for i, row in enumerate(m[key]):
            for f in _NUMERIC:
                vals = [r[key][i].get(f) for r in runs]
                if all(v is not None and math.isfinite(v) for v in vals):
                    row[f] = sum(vals) / n
                    row[f + "_se"] = _se(vals)
    return m


def _se(vals: list[float]) -> float:
    n = len(vals)
    if n < 2:
        return 0.0
    mu = sum(vals) / n
    return math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1) / n)


def _param_rows(work: nn.Module, graph: Graph, planned: dict[str, float | None],
                grads: dict[str, torch.Tensor | None]) -> list[dict[str, Any]]:  # fmt: skip
    from .probes import tensor_stats

    rows = []
    for name, p in work.named_parameters():
        layer = graph.layer_of(name)
        local = name.rsplit(".", 1)[-1]
        role = "bias" if local.startswith("bias") else \
            "head" if layer is not None and "head" in layer.roles else \
            "norm" if layer is not None and layer.kind == "norm" else \
            "embedding" if layer is not None and layer.kind == "embedding" else "weight"  # fmt: skip
        data = p.detach().float()
        std = float(data.std()) if data.numel() > 1 else abs(float(data.reshape(-1)[0]))
        row: dict[str, Any] = {
            "name": name, "layer": layer.name if layer else None, "role": role, "ndim": p.dim(),
            "shape": list(p.shape), "data_std": std,
            "nonfinite": int((~torch.isfinite(data)).sum()),
            "planned_std": planned.get(name), "std_ratio": None, "update_to_data": [],
        }  # fmt: skip
        if row["planned_std"]:
            row["std_ratio"] = std / row["planned_std"]
        g = grads.get(name)
        if g is not None:
            gs = tensor_stats(g)
            row.update(grad_norm=float(g.float().norm()), grad_std=gs.std,
                       grad_to_data=gs.std / std if std > 0 else None,
                       grad_nonfinite=gs.nonfinite, grad_hist=gs.hist)  # fmt: skip
        rows.append(row)
    return rows


def _fresh_batch_norms(work: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms that have never seen a batch (``num_batches_tracked == 0``): their running
    statistics are placeholders (mean 0, variance 1)."""
    return [m for m in work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.num_batches_tracked is not None
            and int(m.num_batches_tracked) == 0]  # fmt: skip


def _fill_running_stats(work: nn.Module, example: torch.Tensor,
                        norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:  # fmt: skip
    """Give ``norms`` (:func:`_fresh_batch_norms`) the example's batch statistics, as BN
    recalibration does: one forward with only those norms in train mode and ``momentum=None``
    (a cumulative average), the model's RNG untouched.

    Before its first training step a BatchNorm divides by a placeholder variance of 1 in eval
    mode, whatever the layer before it computes: the eval-mode Jacobian would measure the
    placeholders, not the network (a conv drawn at :data:`~initlab.planning.NORMALIZED_GAIN`,
    or at HF's N(0, 0.02), shrinks the eval-mode signal 4-20x per layer). ``work`` is the
    doctor's copy; its buffers are restored after.
    """
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    chosen = {id(m) for m in norms}
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        with (
            torch.no_grad(),
            torch.random.fork_rng(devices=[]),
            eval_mode(work, train_if=lambda m: id(m) in chosen),
        ):
            work(example.detach())
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def _jacobian(work: nn.Module, example: Any, gen: torch.Generator,
              fresh: Sequence[nn.modules.batchnorm._BatchNorm] = (), probes: int = 4,
              iters: int = 8) -> dict[str, Any] | None:  # fmt: skip
    """Singular values of the input-output Jacobian on up to 4 examples (eval mode; the
    BatchNorms in ``fresh`` first get the example's statistics, :func:`_fill_running_stats`).

    ``mean_sq = sum_v ||J v||^2 / sum_v ||v||^2 * d_in / min(d_in, d_out)`` with ``v ~ N(0, I)``
    (Hutchinson 1989's trace estimator, as a ratio: exact for orthogonal maps), the mean squared
    singular value of each example's ``d_out x d_in`` Jacobian; ``sigma_max`` by
    power iteration on ``J^T J`` (``torch.func.jvp`` then ``torch.func.vjp``).
    """
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        return {"mean_sq": None, "note": "needs a single floating-point input tensor"}
    from torch.func import jvp, vjp

    x = example[:4].detach()
    _fill_running_stats(work, example, fresh)
    with eval_mode(work):
        try:

            def f(inp: torch.Tensor) -> torch.Tensor:
                return _output(work(inp))

            with torch.no_grad():
                out = f(x)
            b = x.shape[0]
            d_in, d_out = x[0].numel(), out[0].numel()
            total = norm_v = 0.0
            for _ in range(probes):
                v = torch.randn(x.shape, generator=gen).to(x)
                _, jv = jvp(f, (x,), (v,))
                total += float(jv.detach().double().pow(2).sum())
                norm_v += float(v.double().pow(2).sum())
            # ratio estimator: exact when J^T J is a multiple of the identity
            mean_sq = total / norm_v * d_in / min(d_in, d_out)
            # power iteration, one factor of J per half step so tiny sigmas do not underflow
            v = torch.randn(x.shape, generator=gen).to(x)
            v = v / v.norm()
            sigma = 0.0
            _, pullback = vjp(f, x)
            for _ in range(iters):
                _, jv = jvp(f, (x,), (v,))
                jv = jv.detach()
                norm = float(jv.norm())
                if norm == 0 or not math.isfinite(norm):
                    sigma = norm
                    break
                (w,) = pullback(jv / norm)
                w = w.detach()
                sigma = float(w.norm())
                if sigma == 0 or not math.isfinite(sigma):
                    break
                v = w / sigma
            sigma_sq = sigma * sigma
            sigma_max = sigma
            spread = sigma_sq / mean_sq if mean_sq > 0 else None
            return {"mean_sq": mean_sq, "sigma_max": sigma_max, "spread": spread,
                    "examples": b, "d_in": d_in, "d_out": d_out}  # fmt: skip
        except Exception as exc:  # forward-mode AD is missing for some ops
            return {"mean_sq": None, "note": f"Jacobian not estimated: {type(exc).__name__}: {exc}"}


def _make_optimizer(optimizer: Any, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if optimizer is None:
        return torch.optim.SGD(params, lr=0.1)
    if isinstance(optimizer, torch.optim.Optimizer):
        return type(optimizer)(params, **optimizer.defaults)
    if callable(optimizer):
        return optimizer(params)
    raise InitlabError(
        f"optimizer must be an Optimizer class, factory or instance, got {optimizer!r}"
    )


def _train(work: nn.Module, data: list[tuple[Any, Any]], steps: int, loss_fn: Callable | None,
           optimizer: Any, gen: torch.Generator, m: dict[str, Any],
           tick: Callable[[int], None]) -> tuple[list[dict[str, Any]], str, float | None]:  # fmt: skip
    """``steps`` optimizer steps; the true update ``||W_after - W_before|| / ||W_before||``.

    Returns the loss history, the optimizer as text (``SGD(lr=0.1)``) and its learning rate."""
    opt = _make_optimizer(optimizer, [p for p in work.parameters() if p.requires_grad])
    lr = opt.param_groups[0].get("lr") if opt.param_groups else None
    lr = float(lr) if isinstance(lr, (int, float)) else None
    text = type(opt).__name__ + (f"(lr={lr:g})" if lr is not None else "")
    rows = {r["name"]: r for r in m["params"]}
    named = [(n, p) for n, p in work.named_parameters() if p.requires_grad]
    history = []
    for step in range(steps):
        tick(step)
        x, y = data[step % len(data)]
        opt.zero_grad(set_to_none=True)
        out = _output(run_forward(work, x))
        loss, _ = _loss(out, y, loss_fn, gen)
        loss.backward()
        before = [p.detach().clone() for _, p in named]
        opt.step()
        ratios = {}
        with torch.no_grad():
            for (n, p), b in zip(named, before, strict=True):
                denom = float(b.float().norm())
                r = float((p.detach() - b).float().norm()) / denom if denom > 0 else None
                ratios[n] = r
                rows[n]["update_to_data"].append(r)
        history.append({"step": step, "loss": float(loss.detach())})
    opt.zero_grad(set_to_none=True)
    return history, text, lr


def _layer_rows(graph: Graph, m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per traced layer: its activation's figures and its weight's gradient figures."""
    acts: dict[str, dict[str, Any]] = {}
    for r in m["activations"]:
        if r.get("after"):
            acts.setdefault(r["after"], r)
    outs = {r["name"]: r for r in m["layer_outputs"]}
    params = {r["name"]: r for r in m["params"]}
    rows = []
    for la in graph.order():
        if la.calls == 0:
            continue
        prefix = f"{la.name}." if la.name else ""
        p = params.get(prefix + "weight") or next(
            (r for n, r in params.items() if n.startswith(prefix) and r["layer"] == la.name), None
        )
        a = acts.get(la.name) or outs.get(la.name) or outs.get(f"{la.name}#0") or {}
        ups = [u for u in (p or {}).get("update_to_data") or [] if u]
        rows.append({
            "name": la.name or "<root>", "kind": la.kind, "activation": la.activation,
            "roles": sorted(la.roles), "calls": la.calls,
            "pre_std": (outs.get(la.name) or outs.get(f"{la.name}#0") or {}).get("std"),
            "act_mean": a.get("mean"), "act_std": a.get("std"),
            "saturated_frac": a.get("saturated_frac"), "dead_frac": a.get("dead_frac"),
            "grad_norm": (p or {}).get("grad_norm"), "grad_to_data": (p or {}).get("grad_to_data"),
            "update_to_data": (sum(ups) / len(ups)) if ups else None,
            "weight_std": (p or {}).get("data_std"), "planned_std": (p or {}).get("planned_std"),
            "std_ratio": (p or {}).get("std_ratio"),
        })  # fmt: skip
    return rows
