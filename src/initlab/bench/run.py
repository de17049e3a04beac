"""``initlab bench``: the seeds' experiments on real, offline data, with tables and plots.

Each suite trains the same models on the same data with the same recipe and seeds for every
method; only the initialization differs. Learning rates follow one rule per suite (written in
the suite's docstring), never a per-method choice. Failures (NaN, divergence) are reported as
such. Runs are bit-reproducible at a fixed thread count (``torch.set_num_threads`` is pinned).
"""

from __future__ import annotations

import csv
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

from ..errors import check_choice
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
    order = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        yield x[idx], y[idx]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in eval mode (restoring the mode after)."""
    was = model.training
    model.eval()
    out = model(x)
    model.train(was)
    return float((out.argmax(-1) == y).float().mean())


def train_classifier(
    build: Callable[[], nn.Module],
    method: str,
    ds: bench_data.Dataset,
    recipe: Recipe,
    seed: int,
    run: Run,
) -> Run:
    """Build, initialize by ``method``, train by ``recipe``; fill ``run`` (never raises on NaN)."""
    torch.manual_seed(seed)  # the models' own default init (torch-default) must be seeded too
    model = build()
    g = torch.Generator().manual_seed(seed)
    example = ds.x_train[:256]
    ctx = Context(
        example,
        lambda: _batches(ds.x_train, ds.y_train, recipe.batch, torch.Generator().manual_seed(seed)),
        F.cross_entropy,
        recipe,
        seed,
        ds.num_classes,
        math.ceil(len(ds.x_train) / recipe.batch),
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
    with torch.no_grad():
        run.init_loss = float(F.cross_entropy(model(ds.x_train), ds.y_train))
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)  # fmt: skip
    epochs = recipe.epochs + recipe.extra_epochs
    steps_per_epoch = math.ceil(len(ds.x_train) / recipe.batch)
    warm = recipe.warmup_epochs * steps_per_epoch
    step = 0
    accs = []
    model.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for xb, yb in _batches(ds.x_train, ds.y_train, recipe.batch, g):
            if warm:
                for group in opt.param_groups:
                    group["lr"] = recipe.lr * min(1.0, (step + 1) / warm)
            loss = F.cross_entropy(model(xb), yb)
            if not torch.isfinite(loss) or loss.item() > 1e4:
                run.diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total, n = total + loss.item() * len(xb), n + len(xb)
        if run.diverged:
            break
        run.losses.append(total / n)
        accs.append(accuracy(model, ds.x_test, ds.y_test))
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


def _depth(seeds: int, depths: list[int], methods: list[str], epochs: int, progress) -> list[Run]:
    """Plain MLPs (width 256, no normalization) on standardized digits; one recipe for every
    method: SGD momentum 0.9, lr 0.01, batch 64 (REFERENCE.md's)."""
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
                    runs.append(train_classifier(build, method, ds, recipe, seed, run))
    return runs


def _residual(seeds: int, blocks: list[int], lrs: list[float], methods: list[str], epochs: int,
              progress) -> list[Run]:  # fmt: skip
    """Residual MLPs without normalization on digits across learning rates; SGD momentum 0.9."""
    runs = []
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed)
        for n in blocks:
            for lr in lrs:
                recipe = Recipe(lr=lr, epochs=epochs)
                for method in methods:
                    progress(f"residual {n} blocks lr {lr} {method} seed {seed}")
                    run = Run("residual", f"resmlp{n}", method, seed, lr)
                    build = lambda k=n: bench_models.residual_mlp(64, 10, k, 128)  # noqa: E731
                    runs.append(train_classifier(build, method, ds, recipe, seed, run))
    return runs


def _gradinit_table(seeds: int, epochs: int, progress) -> list[Run]:
    """Seed 004's table scaled to CPU: VGG-like and ResNet-like CNNs, with and without
    BatchNorm, on digits as 8x8 images. One recipe for all rows: SGD momentum 0.9, lr 0.1 with
    BN and 0.01 without (the rule: 0.1 is the paper's; without normalization the paper's nets
    need a smaller rate, the same for every method), weight decay 5e-4, batch 64. Rows: Kaiming,
    Kaiming + 1 epoch (constant lr), Kaiming + 1 epoch (linear warmup over the first epoch),
    MetaInit, GradInit, LSUV, ZerO, Fixup (no-BN ResNet only)."""
    runs = []
    archs = {
        "vgg": lambda bn: bench_models.vgg_like(1, 10, batchnorm=bn),
        "resnet": lambda bn: bench_models.resnet_like(1, 10, 3, batchnorm=bn),
    }
    rows = [("kaiming", 0, 0), ("kaiming +1 epoch const", 1, 0), ("kaiming +1 epoch warmup", 1, 1),
            ("metainit", 0, 0), ("gradinit", 0, 0), ("lsuv", 0, 0), ("zero", 0, 0), ("fixup", 0, 0)]  # fmt: skip
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed, image=True)
        for arch, make in archs.items():
            for bn in (False, True):
                lr = 0.1 if bn else 0.01
                for row, extra, warm in rows:
                    if row == "fixup" and (arch != "resnet" or bn):
                        continue
                    method = row.split(" ")[0]
                    recipe = Recipe(lr=lr, epochs=epochs, weight_decay=5e-4, extra_epochs=extra,
                                    warmup_epochs=warm)  # fmt: skip
                    name = f"{arch}{'-bn' if bn else ''}"
                    progress(f"gradinit-table {name} {row} seed {seed}")
                    run = Run("gradinit-table", name, row, seed, lr)
                    runs.append(
                        train_classifier(lambda m=make, b=bn: m(b), method, ds, recipe, seed, run)
                    )
    return runs


SUITES = ("quick", "makemore", "gradinit-table", "depth", "residual", "all")


def run_suite(name: str, *, seeds: int = 1, out: str | Path | None = None, threads: int = 1,
              progress: Callable[[str], None] | None = None) -> list[Run]:  # fmt: skip
    """Run a suite; write JSON, CSV, Markdown and plots to ``out`` when given."""
    check_choice("suite", name, SUITES)
    torch.set_num_threads(threads)
    say = progress or (lambda s: None)
    runs: list[Run] = []
    if name == "quick":
        runs += _makemore(1, 2000, say)
        runs += _depth(1, [30], ["torch-default", "kaiming", "initlab"], 3, say)
        runs += _residual(
            1,
            [20],
            [0.1],
            ["torch-default", "initlab", "initlab-zero-residual", "skipinit"],
            3,
            say,
        )
    if name in ("makemore", "all"):
        runs += _makemore(seeds, 20000, say)
    if name in ("depth", "all"):
        methods = ["torch-default", "kaiming", "initlab", "lsuv", "gradinit", "metainit", "zero"]
        runs += _depth(seeds, [10, 30, 50, 100], methods, 5, say)
    if name in ("residual", "all"):
        methods = [
            "torch-default",
            "kaiming",
            "initlab",
            "initlab-zero-residual",
            "skipinit",
            "fixup",
            "zero",
        ]
        runs += _residual(seeds, [20, 50], [0.01, 0.03, 0.1, 0.3], methods, 5, say)
    if name in ("gradinit-table", "all"):
        runs += _gradinit_table(seeds, 8, say)
    if out is not None:
        write_outputs(runs, Path(out), name, seeds, threads)
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


def environment(seeds: int, threads: int) -> dict[str, Any]:
    """What a result depends on: versions, threads, device, seeds."""
    import numpy

    from .. import __version__

    return {"initlab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "threads": threads, "device": "cpu",
            "seeds": list(range(seeds)), "machine": platform.machine()}  # fmt: skip


def write_outputs(runs: list[Run], out: Path, suite: str, seeds: int, threads: int) -> None:
    """results.json, results.csv, results.md and PNG plots in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    payload = {"suite": suite, "environment": environment(seeds, threads), "summary": rows,
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


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Loss curves per method (one figure per model) and accuracy vs depth."""
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
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        path = out / f"loss_{suite}_{model}_lr{lr:g}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
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
