"""Training runs of the bench: the one loop every suite uses, and what it records.

:class:`Run` holds one training run's outcome (accuracy after each epoch, losses, divergence,
seconds); :func:`train_classifier` trains a classifier under a :class:`~initlab.bench.methods.Recipe`
(SGD or Adam, warmup, cosine, clipping, per-group lrs, GPU-side augmentation) and fills a Run;
:func:`accuracy` and :func:`activation_stds` measure a model without changing its modes or hooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import capture_outputs, eval_mode
from . import data as bench_data
from .methods import METHODS, Context, Recipe

GRADINIT_SCALE_LR = {"vgg": 1e-2, "vgg-bn": 1e-1, "resnet": 5e-2, "resnet-bn": 1e-3}
"""GradInit's scale lr per architecture, from the released ``launch/run_gradinit.sh``."""


@dataclass
class Run:
    """One training run: a model, a method, a seed and what came of it."""

    suite: str
    model: str
    method: str
    seed: int
    lr: float
    init_loss: float = math.nan
    acc_1: float = math.nan  # test accuracy after the first epoch
    acc_best: float = math.nan
    acc_final: float = math.nan
    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    error: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _batches(x: torch.Tensor, y: torch.Tensor, batch: int, g: torch.Generator) -> Iterator[tuple]:
    order = torch.randperm(len(x), generator=g).to(x.device)
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        yield x[idx], y[idx]


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4, cutout: int = 16) -> torch.Tensor:
    """GradInit's CIFAR augmentation on a batch of images ``(B, C, H, W)``, on its device.

    Per image: a random ``H x W`` crop of the image zero-padded by ``pad`` pixels, a horizontal
    flip with probability 1/2, then Cutout (DeVries & Taylor 2017): a ``cutout x cutout`` square
    of zeros at a uniform centre, clipped at the border. Random numbers come from the CPU
    generator ``g``, so a run is reproducible whatever the device.

    >>> x = torch.ones(2, 3, 8, 8)
    >>> augment(x, torch.Generator().manual_seed(0), pad=2, cutout=0).shape
    torch.Size([2, 3, 8, 8])
    """
    b, c, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(dev)
    flip = (torch.rand(b, generator=g) < 0.5).to(dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(b, device=dev)[:, None, None, None],
                 torch.arange(c, device=dev)[None, :, None, None], rows, cols]  # fmt: skip
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    if cutout > 0:
        cy = torch.randint(0, h, (b,), generator=g).to(dev)[:, None, None]
        cx = torch.randint(0, w, (b,), generator=g).to(dev)[:, None, None]
        yy = torch.arange(h, device=dev)[None, :, None]
        xx = torch.arange(w, device=dev)[None, None, :]
        hole = (yy >= cy - cutout // 2) & (yy < cy + (cutout + 1) // 2)
        hole = hole & (xx >= cx - cutout // 2) & (xx < cx + (cutout + 1) // 2)
        out = out * (~hole)[:, None].to(out.dtype)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in eval mode (restoring every module's mode after), in chunks of ``batch``."""
    with eval_mode(model):
        correct = sum(
            int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
            for i in range(0, len(x), batch)
        )
    return correct / len(x)


@torch.no_grad()
def activation_stds(model: nn.Module, x: torch.Tensor) -> list[tuple[str, float]]:
    """The std of every Linear/conv layer's output on ``x``, in call order (for the plots)."""
    layers = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    }
    with capture_outputs(layers, keep=lambda y: float(y.float().std())) as out, eval_mode(model):
        model(x)
    return out


def _lr_factor(step: int, recipe: Recipe, steps_per_epoch: int) -> float:
    """The schedule: ``extra_epochs`` first (constant, or linear warmup when ``warmup_epochs``),
    then the ``epochs`` proper (constant, or cosine to 0)."""
    warm = recipe.warmup_epochs * steps_per_epoch
    factor = min(1.0, (step + 1) / warm) if warm else 1.0
    if recipe.cosine:
        main = step - recipe.extra_epochs * steps_per_epoch
        if main >= 0:
            total = recipe.epochs * steps_per_epoch
            factor *= 0.5 * (1 + math.cos(math.pi * main / total))
    return factor


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """SGD groups: ``bias``/``scale`` tensors at ``bias_lr_mult``; norm layers without decay."""
    from ..graph import is_norm

    norm_ids = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(False)}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        mult = recipe.bias_lr_mult if ("bias" in leaf or "scale" in leaf) else 1.0
        decay = 0.0 if id(p) in norm_ids else recipe.weight_decay
        groups.setdefault((mult, decay), []).append(p)
    return [{"params": ps, "lr": recipe.lr * mult, "weight_decay": decay, "mult": mult}
            for (mult, decay), ps in groups.items()]  # fmt: skip


def train_classifier(
    build: Callable[[], nn.Module],
    method: str,
    ds: bench_data.Dataset,
    recipe: Recipe,
    seed: int,
    run: Run,
    *,
    device: str | torch.device = "cpu",
    options: dict[str, Any] | None = None,
) -> Run:
    """Build, initialize by ``method``, train by ``recipe``; fill ``run`` (never raises on NaN).

    The model is built on the CPU (its default init reads the global RNG, seeded here), moved to
    ``device``, initialized and trained there; data batches and augmentation draw from CPU
    generators, so CPU runs are bit-reproducible at a fixed thread count (CUDA runs are not
    bit-exact: cuDNN's kernels are not deterministic by default).
    """
    torch.manual_seed(seed)  # the models' own default init (torch-default) must be seeded too
    device = torch.device(device)
    model = build().to(device)
    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    x_test, y_test = ds.x_test.to(device), ds.y_test.to(device)
    g = torch.Generator().manual_seed(seed)
    example = x_train[:256]
    ctx = Context(
        example,
        lambda: _batches(x_train, y_train, recipe.batch, torch.Generator().manual_seed(seed)),
        F.cross_entropy,
        recipe,
        seed,
        ds.num_classes,
        math.ceil(len(x_train) / recipe.batch),
        options or {},
    )
    t0 = time.perf_counter()
    try:
        METHODS[method](model, ctx)
    except ImportError as exc:
        run.error = f"unavailable: {exc}"
        return run
    except Exception as exc:  # a method that fails is a result, reported as such
        run.error = f"{type(exc).__name__}: {exc}"[:200]
        return run
    run.extra["init_seconds"] = time.perf_counter() - t0
    run.extra["device"] = str(device)
    with torch.no_grad():
        n = min(len(x_train), 2048)
        run.init_loss = float(F.cross_entropy(model(x_train[:n]), y_train[:n]))
    run.extra["act_std"] = activation_stds(model, example)
    groups = _param_groups(model, recipe)
    opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    params = [p for grp in groups for p in grp["params"]]
    epochs = recipe.epochs + recipe.extra_epochs
    steps_per_epoch = ctx.steps_per_epoch
    step = 0
    accs = []
    model.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for xb, yb in _batches(x_train, y_train, recipe.batch, g):
            if recipe.augment:
                xb = augment(xb, g)
            factor = _lr_factor(step, recipe, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = recipe.lr * group["mult"] * factor
            loss = F.cross_entropy(model(xb), yb)
            if not torch.isfinite(loss) or loss.item() > 1e4:
                run.diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, recipe.clip)
            opt.step()
            step += 1
            total, n = total + loss.item() * len(xb), n + len(xb)
        if run.diverged:
            break
        run.losses.append(total / n)
        accs.append(accuracy(model, x_test, y_test))
    run.seconds = time.perf_counter() - t0
    if accs:
        # "+1 epoch" rows report Acc_1 after their extra epoch, as GradInit's table (Zhu et al. 2021) does
        run.acc_1 = accs[recipe.extra_epochs] if len(accs) > recipe.extra_epochs else math.nan
        run.acc_best, run.acc_final = max(accs), accs[-1]
    return run


# ---------------------------------------------------------------------------------------------
# suites
