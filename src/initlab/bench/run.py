"""``initlab bench``: the seeds' experiments on real, offline data, with tables and plots.

Each suite trains the same models on the same data with the same recipe and seeds for every
method; only the initialization differs. Learning rates follow one rule per suite (written in
the suite's docstring), never a per-method choice. Failures (NaN, divergence) are reported as
such. Runs are bit-reproducible at a fixed thread count (``torch.set_num_threads`` is pinned).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InitlabError, check_choice
from . import data as bench_data
from . import models as bench_models
from .methods import METHODS, Context, Recipe


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
    """Top-1 accuracy in eval mode (restoring the mode after), in chunks of ``batch``."""
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    model.train(was)
    return correct / len(x)


@torch.no_grad()
def activation_stds(model: nn.Module, x: torch.Tensor) -> list[tuple[str, float]]:
    """The std of every Linear/conv layer's output on ``x``, in call order (for the plots)."""
    out: list[tuple[str, float]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _, y: out.append((names[mod], float(y.float().std()))))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    was = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
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
        # "+1 epoch" rows report Acc_1 after their extra epoch, as the seed's table does
        run.acc_1 = accs[recipe.extra_epochs] if len(accs) > recipe.extra_epochs else math.nan
        run.acc_best, run.acc_final = max(accs), accs[-1]
    return run


# ---------------------------------------------------------------------------------------------
# suites


def _makemore(seeds: int, steps: int, progress: Callable[[str], None]) -> list[Run]:
    """Seed 003: the makemore MLP on US first names; initial loss, saturation, dead units, losses.

    Recipe (the lecture's): batch 32, SGD lr 0.1 for the first half of ``steps`` then 0.01.
    """
    ds = bench_data.load("names", block_size=3, seed=42)
    x_val = ds.x_val if ds.x_val is not None else ds.x_test
    y_val = ds.y_val if ds.y_val is not None else ds.y_test
    inits: dict[str, Callable[[nn.Module, int], None]] = {
        "naive randn": lambda m, s: bench_models.makemore_naive_init_(m, _g(s)),
        "W2*0.01, b2*0": lambda m, s: bench_models.makemore_fixed_init_(m, _g(s), fix_tanh=False),
        "+ W1*0.2, b1*0.01": lambda m, s: bench_models.makemore_fixed_init_(m, _g(s)),
        "+ W1*(5/3)/sqrt(30)": _kaiming_makemore,
        "initlab.init": lambda m, s: _initlab_init(m, ds, s, 1.0),
        "initlab.init head_scale=0.01": lambda m, s: _initlab_init(m, ds, s, 0.01),
    }
    runs = []
    for seed in range(seeds):
        for name, fn in inits.items():
            progress(f"makemore {name} seed {seed}")
            model = bench_models.MakemoreMLP()
            fn(model, 2147483647 + seed)
            run = Run("makemore", "MakemoreMLP", name, seed, 0.1)
            g = torch.Generator().manual_seed(seed)
            xb_idx = torch.randint(0, len(ds.x_train), (32,), generator=g)
            with torch.no_grad():
                emb = model.C(ds.x_train[xb_idx]).flatten(1)
                h = torch.tanh(model.W1(emb))
                run.init_loss = float(F.cross_entropy(model.W2(h), ds.y_train[xb_idx]))
                run.extra["saturated_frac"] = float((h.abs() > 0.99).float().mean())
                run.extra["dead_units_frac"] = float((h.abs() > 0.99).all(0).float().mean())
            t0 = time.perf_counter()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for step in range(steps):
                idx = torch.randint(0, len(ds.x_train), (32,), generator=g)
                loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for group in opt.param_groups:
                    group["lr"] = 0.1 if step < steps // 2 else 0.01
                opt.step()
                if step % max(1, steps // 50) == 0:
                    run.losses.append(loss.item())
            with torch.no_grad():
                run.extra["train_loss"] = float(F.cross_entropy(model(ds.x_train), ds.y_train))
                run.extra["val_loss"] = float(F.cross_entropy(model(x_val), y_val))
            run.seconds = time.perf_counter() - t0
            runs.append(run)
    return runs


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _kaiming_makemore(model: nn.Module, seed: int) -> None:
    """The lecture's Kaiming fix: W1 * (5/3)/sqrt(fan_in), b1*0.01, W2*0.01, b2*0."""
    bench_models.makemore_naive_init_(model, _g(seed))
    model.W1.weight.mul_((5 / 3) / math.sqrt(model.W1.in_features))
    model.W1.bias.mul_(0.01)
    model.W2.weight.mul_(0.01)
    model.W2.bias.zero_()


def _initlab_init(model: nn.Module, ds: bench_data.Dataset, seed: int, head_scale: float) -> None:
    from ..plan import init

    init(model, example=ds.x_train[:32], seed=seed, head_scale=head_scale)


def _depth(seeds: int, depths: list[int], methods: list[str], epochs: int, progress,
           device: str = "cpu") -> list[Run]:  # fmt: skip
    """Plain MLPs (width 256, no normalization) on standardized digits; one recipe for every
    method: SGD momentum 0.9, lr 0.01, batch 64 (REFERENCE.md's). Learned methods start from
    ``initlab.init`` and GradInit is fitted to lr 0.01 (issue 5's depth challenge)."""
    recipe = Recipe(lr=0.01, epochs=epochs)
    runs = []
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed)
        for act in ("tanh", "relu"):
            for depth in depths:
                for method in methods:
                    progress(f"depth {depth} {act} {method} seed {seed}")
                    run = Run("depth", f"mlp{depth}-{act}", method, seed, recipe.lr)
                    build = lambda d=depth, a=act: bench_models.plain_mlp(64, 10, d, 256, a)  # noqa: E731
                    runs.append(
                        train_classifier(build, method, ds, recipe, seed, run, device=device)
                    )
    return runs


def _residual(seeds: int, blocks: list[int], lrs: list[float], methods: list[str], epochs: int,
              progress, device: str = "cpu") -> list[Run]:  # fmt: skip
    """Residual MLPs (width 128) without normalization on digits with pixels in [0, 1], across
    learning rates; SGD momentum 0.9, batch 64; Fixup's scalars at lr / 10 (its recipe).

    Inputs in [0, 1], not standardized: with the branches at zero (SkipInit, Fixup) the net is
    the linear map head(stem(x)), and standardized inputs (4x the squared norm) make that map
    itself unstable at lr 0.3, which would hide what the residual inits do."""
    runs = []
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed, unit=True)
        for n in blocks:
            for lr in lrs:
                for method in methods:
                    recipe = Recipe(lr=lr, epochs=epochs,
                                    bias_lr_mult=0.1 if method == "fixup" else 1.0)  # fmt: skip
                    progress(f"residual {n} blocks lr {lr} {method} seed {seed}")
                    run = Run("residual", f"resmlp{n}", method, seed, lr)
                    build = lambda k=n: bench_models.residual_mlp(64, 10, k, 128)  # noqa: E731
                    runs.append(
                        train_classifier(build, method, ds, recipe, seed, run, device=device)
                    )
    return runs


TABLE_ROWS = (("kaiming", 0, 0), ("kaiming +1 epoch const", 1, 0), ("kaiming +1 epoch warmup", 1, 1),
              ("metainit", 0, 0), ("gradinit", 0, 0), ("lsuv", 0, 0), ("zero", 0, 0),
              ("fixup", 0, 0))  # fmt: skip
"""The rows of seed 004's table (+ LSUV, ZerO, Fixup): (row name, extra epochs, warmup)."""

GRADINIT_SCALE_LR = {"vgg": 1e-2, "vgg-bn": 1e-1, "resnet": 5e-2, "resnet-bn": 1e-3}
"""GradInit's scale lr per architecture, from the released ``launch/run_gradinit.sh``."""


def _table(suite: str, ds: bench_data.Dataset, archs: dict[str, Callable[[bool], nn.Module]],
           seed: int, base: Recipe, progress, device: str) -> list[Run]:  # fmt: skip
    """One seed of the seed-004 table on ``ds``: every architecture with and without BN, every
    row, GradInit's recipe (see :func:`_gradinit_table`)."""
    runs = []
    for arch, make in archs.items():
        for bn in (False, True):
            family = arch.rstrip("0123456789")
            for row, extra, warm in TABLE_ROWS:
                if row == "fixup" and (family != "resnet" or bn):
                    continue
                method = row.split(" ")[0]
                recipe = dataclasses.replace(
                    base, extra_epochs=extra, warmup_epochs=warm, clip=0.0 if bn else 1.0,
                    bias_lr_mult=0.1 if family == "resnet" and not bn else 1.0,
                )  # fmt: skip
                key = f"{family}{'-bn' if bn else ''}"
                options = {"base": "kaiming", "gradinit_scale_lr": GRADINIT_SCALE_LR[key]}
                name = f"{arch}{'-bn' if bn else ''}"
                progress(f"{suite} {name} {row} seed {seed}")
                run = Run(suite, name, row, seed, recipe.lr)
                runs.append(train_classifier(lambda m=make, b=bn: m(b), method, ds, recipe, seed,
                                             run, device=device, options=options))  # fmt: skip
    return runs


def _gradinit_table(seeds: int, epochs: int, progress, device: str = "cpu") -> list[Run]:
    """Seed 004's table scaled to CPU: VGG-like and ResNet-like CNNs, with and without
    BatchNorm, on digits as 8x8 images.

    One recipe for all rows, GradInit's released CIFAR recipe (``train_cifar.py`` and
    ``launch/run_gradinit.sh``) at CPU scale: SGD momentum 0.9, lr 0.1 for every net, cosine to
    0, weight decay 1e-4 (not on norm layers); nets without BN clip the gradient norm at 1 (the
    scripts' ``--train-clip 1``) and no-BN ResNets train biases and scalars at lr / 10; batch 64,
    ``epochs`` epochs. Rows: Kaiming, Kaiming + 1 epoch (constant lr), Kaiming + 1 epoch
    (linear warmup over the extra epoch), MetaInit and GradInit starting from that Kaiming init
    with a one-epoch budget (GradInit: eta = lr, gamma 1, the script's scale lr), LSUV, ZerO,
    Fixup (no-BN ResNet only)."""
    archs = {
        "vgg": lambda bn: bench_models.vgg_like(1, 10, batchnorm=bn),
        "resnet": lambda bn: bench_models.resnet_like(1, 10, 3, batchnorm=bn),
    }
    base = Recipe(lr=0.1, epochs=epochs, weight_decay=1e-4, cosine=True)
    runs = []
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed, image=True)
        runs += _table("gradinit-table", ds, archs, seed, base, progress, device)
    return runs


VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M")  # fmt: skip
CIFAR_ARCHS: dict[str, Callable[[bool], nn.Module]] = {
    "vgg19": lambda bn: bench_models.vgg_like(3, 10, batchnorm=bn, widths=VGG19),
    "resnet110": lambda bn: bench_models.resnet_like(3, 10, 18, batchnorm=bn),
    "resnet56": lambda bn: bench_models.resnet_like(3, 10, 9, batchnorm=bn),
    "resnet20": lambda bn: bench_models.resnet_like(3, 10, 3, batchnorm=bn),
}
"""The CIFAR-10 suite's models: the paper's VGG-19 and ResNet-110, and smaller ResNets."""


def _cifar10(seeds: int, path: str | Path, epochs: int, archs: list[str], progress,
             device: str, subset: int | None = None) -> list[Run]:  # fmt: skip
    """Seed 004's table on CIFAR-10 itself, GradInit's released recipe in full: batch 128, lr 0.1,
    cosine over ``epochs`` (the paper: 200), weight decay 1e-4, crop + flip + Cutout, gradient
    clip 1 without BN, rows as :func:`_gradinit_table` (GradInit: 390 iterations = one epoch).
    ``subset`` keeps the first N training and test images (for smoke tests)."""
    for a in archs:
        check_choice("CIFAR-10 model", a, CIFAR_ARCHS)
    ds = bench_data.cifar10(path)
    if subset:
        ds = dataclasses.replace(ds, x_train=ds.x_train[:subset], y_train=ds.y_train[:subset],
                                 x_test=ds.x_test[:subset], y_test=ds.y_test[:subset])  # fmt: skip
    base = Recipe(lr=0.1, batch=128, epochs=epochs, weight_decay=1e-4, cosine=True, augment=True)
    runs = []
    for seed in range(seeds):
        chosen = {a: CIFAR_ARCHS[a] for a in archs}
        runs += _table("cifar10", ds, chosen, seed, base, progress, device)
    return runs


SUITES = ("quick", "makemore", "gradinit-table", "gradinit-deep", "depth", "residual", "cifar10",
          "all")  # fmt: skip


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InitlabError(
            f"device {device!r} is not a torch device: use cpu, cuda or cuda:N"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InitlabError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); run on a machine with a GPU or use --device cpu"
        )
    return str(dev)


def run_suite(name: str, *, seeds: int = 1, out: str | Path | None = None, threads: int = 1,
              progress: Callable[[str], None] | None = None, device: str = "cpu",
              data: str | Path | None = None, epochs: int | None = None,
              models: list[str] | None = None, subset: int | None = None) -> list[Run]:  # fmt: skip
    """Run a suite; write JSON, CSV, Markdown and plots to ``out`` when given.

    ``device`` runs the training there (``"cuda"`` for the GPU recipe); ``data`` is the CIFAR-10
    folder (required by ``cifar10``); ``epochs`` overrides the suite's epochs (``cifar10``
    default 200, ``gradinit-table`` 8); ``models`` picks the CIFAR-10 models (default VGG-19
    and ResNet-110).
    """
    check_choice("suite", name, SUITES)
    device = _check_device(device)
    unused = [opt for opt, value, suites in (
        ("data", data, ("cifar10",)), ("models", models, ("cifar10",)),
        ("epochs", epochs, ("depth", "residual", "gradinit-table", "gradinit-deep", "cifar10",
                            "all")),
    ) if value is not None and name not in suites]  # fmt: skip
    if unused:
        raise InitlabError(
            f"suite {name!r} does not use {', '.join(unused)} (CLI: --{' --'.join(unused)}); "
            "drop it, or pick a suite that does (data and models: cifar10; epochs: depth, "
            "residual, gradinit-table, cifar10)"
        )
    if name == "cifar10" and data is None:
        raise InitlabError(
            "suite cifar10 needs the CIFAR-10 folder: pass data= (CLI: --data PATH) pointing at "
            "the extracted cifar-10-python.tar.gz; initlab never downloads"
        )
    torch.set_num_threads(threads)
    say = progress or (lambda s: None)
    runs: list[Run] = []
    if name == "quick":
        runs += _makemore(1, 2000, say)
        runs += _depth(1, [30], ["torch-default", "kaiming", "initlab"], 3, say, device)
        runs += _residual(
            1, [20], [0.1], ["torch-default", "initlab", "initlab-zero-residual", "skipinit"], 3,
            say, device,
        )  # fmt: skip
    if name in ("makemore", "all"):
        runs += _makemore(seeds, 20000, say)
    if name in ("depth", "all"):
        methods = ["torch-default", "kaiming", "initlab", "lsuv", "gradinit", "metainit", "zero"]
        runs += _depth(seeds, [10, 30, 50, 100], methods, epochs or 5, say, device)
    if name in ("residual", "all"):
        methods = ["torch-default", "kaiming", "initlab", "initlab-zero-residual", "skipinit",
                   "fixup", "zero"]  # fmt: skip
        runs += _residual(seeds, [20, 50], [0.01, 0.03, 0.1, 0.3], methods, epochs or 5, say,
                          device)  # fmt: skip
    if name in ("gradinit-table", "all"):
        runs += _gradinit_table(seeds, epochs or 8, say, device)
    if name == "gradinit-deep":
        from . import gradinit_deep

        runs += gradinit_deep.run(seeds, epochs or 2, say, device)
    if name == "cifar10":
        runs += _cifar10(seeds, data, epochs or 200, models or ["vgg19", "resnet110"], say,  # type: ignore[arg-type]
                         device, subset)  # fmt: skip
    if out is not None:
        write_outputs(runs, Path(out), name, seeds, threads, device)
    return runs


# ---------------------------------------------------------------------------------------------
# tables and files


def _mean_se(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals) / math.sqrt(len(vals)):.3f}"


def summarize(runs: list[Run]) -> list[dict[str, str]]:
    """One row per (suite, model, method, lr): means ± standard errors over seeds; failures counted."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.suite, r.model, r.method, r.lr), []).append(r)
    rows = []
    for (suite, model, method, lr), rs in groups.items():
        row = {
            "suite": suite,
            "model": model,
            "method": method,
            "lr": f"{lr:g}",
            "seeds": str(len(rs)),
        }
        errors = [r.error for r in rs if r.error]
        row["init loss"] = _mean_se([r.init_loss for r in rs])
        if suite == "makemore":
            for key in ("saturated_frac", "dead_units_frac", "train_loss", "val_loss"):
                row[key.replace("_", " ")] = _mean_se([r.extra.get(key, math.nan) for r in rs])
        else:
            row["Acc_1"] = _mean_se([r.acc_1 for r in rs])
            row["Acc_best"] = _mean_se([r.acc_best for r in rs])
            row["diverged"] = f"{sum(r.diverged for r in rs)}/{len(rs)}"
        row["note"] = errors[0][:60] if errors else ""
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    """Rows as Markdown tables, one per suite."""
    out = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        part = [r for r in rows if r["suite"] == suite]
        cols = [c for c in part[0] if c != "suite"]
        out.append(f"### {suite}\n")
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        out.extend("| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in part)
        out.append("")
    return "\n".join(out)


def environment(seeds: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    """What a result depends on: versions, threads, device, seeds."""
    import numpy

    from .. import __version__

    return {"initlab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "threads": threads, "device": _device_name(device),
            "seeds": list(range(seeds)), "machine": platform.machine()}  # fmt: skip


def _device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def write_outputs(runs: list[Run], out: Path, suite: str, seeds: int, threads: int,
                  device: str = "cpu") -> None:  # fmt: skip
    """results.json, results.csv, results.md and PNG plots in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    payload = {"suite": suite, "environment": environment(seeds, threads, device), "summary": rows,
               "runs": [r.__dict__ for r in runs]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    with open(out / "results.csv", "w", newline="") as f:
        fields = sorted(
            {k for r in rows for k in r},
            key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99,
        )
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown(rows))
    try:
        plot(runs, out)
    except ImportError:  # matplotlib is the optional [plot] extra: say so, keep the tables
        (out / "PLOTS_SKIPPED.txt").write_text("install initlab[plot] (matplotlib) for the plots\n")


def _save_log_plot(fig: Any, ax: Any, path: Path) -> Path:
    """Log y axis, legend, save as PNG and close."""
    import matplotlib.pyplot as plt

    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Loss curves per method (one figure per model), the std of each layer's output at init
    per method, and accuracy vs depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_model: dict[tuple[str, str, float], list[Run]] = {}
    for r in runs:
        by_model.setdefault((r.suite, r.model, r.lr), []).append(r)
    for (suite, model, lr), rs in by_model.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rs:
            if r.losses and r.seed == 0:
                ax.plot(r.losses, label=r.method + (" (diverged)" if r.diverged else ""))
        ax.set_title(f"{suite}: {model}, lr {lr:g}")
        ax.set_xlabel("epoch" if suite != "makemore" else "step / (steps/50)")
        ax.set_ylabel("training loss")
        paths.append(_save_log_plot(fig, ax, out / f"loss_{suite}_{model}_lr{lr:g}.png"))
    by_net: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if r.extra.get("act_std") and r.seed == 0:
            by_net.setdefault((r.suite, r.model), []).append(r)
    for (suite, model), rs in by_net.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        seen = set()
        for r in rs:
            if r.method in seen:  # the same init at several lrs: one curve
                continue
            seen.add(r.method)
            stds = [max(v, 1e-12) for _, v in r.extra["act_std"]]
            ax.plot(range(1, len(stds) + 1), stds, marker=".", label=r.method)
        ax.set_title(f"{suite}: {model}, output std per layer at init (seed 0)")
        ax.set_xlabel("Linear/conv layer, in call order")
        ax.set_ylabel("std of the layer's output")
        paths.append(_save_log_plot(fig, ax, out / f"act_std_{suite}_{model}.png"))
    depth_runs = [r for r in runs if r.suite == "depth"]
    if depth_runs:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, act in zip(axes, ("tanh", "relu"), strict=True):
            for method in dict.fromkeys(r.method for r in depth_runs):
                pts: dict[int, list[float]] = {}
                for r in depth_runs:
                    if r.method == method and r.model.endswith(act):
                        pts.setdefault(int(r.model[3:].split("-")[0]), []).append(
                            0.0 if r.diverged or math.isnan(r.acc_final) else r.acc_final
                        )
                xs = sorted(pts)
                ax.plot(xs, [statistics.mean(pts[x]) for x in xs], marker="o", label=method)
            ax.set_title(f"plain MLP, {act}: test accuracy vs depth")
            ax.set_xlabel("depth")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "accuracy_vs_depth.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
