"""``initlab bench``: the papers' experiments (makemore part 3, GradInit's table, deep plain and
residual nets) on real, offline data, with tables and plots.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InitlabError, check_choice
from . import data as bench_data
from . import models as bench_models
from .methods import Recipe
from .training import (
    GRADINIT_SCALE_LR,
    Run,
    train_classifier,
)


def _makemore(seeds: int, steps: int, progress: Callable[[str], None]) -> list[Run]:
    """Karpathy's makemore (part 3): the MLP on US first names; initial loss, saturation, dead units, losses.

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
        "initlab.init": lambda m, s: _initlab_init(m, ds, s, None),
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
            run.extra["loss_every"] = max(1, steps // 50)  # the plots' step axis
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


def _initlab_init(
    model: nn.Module, ds: bench_data.Dataset, seed: int, head_scale: float | None
) -> None:
    from ..planning import init

    init(model, example=ds.x_train[:32], seed=seed, head_scale=head_scale)


def _depth(seeds: int, depths: list[int], methods: list[str], epochs: int, progress,
           device: str = "cpu") -> list[Run]:  # fmt: skip
    """Plain MLPs (width 256, no normalization) on standardized digits; one recipe for every
    method: SGD momentum 0.9, lr 0.01, batch 64 (REFERENCE.md's). Learned methods start from
    ``initlab.init`` and GradInit is fitted to lr 0.01 (the depth experiment)."""
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
              ("metainit", 0, 0), ("gradinit", 0, 0), ("lsuv", 0, 0), ("zerO", 0, 0),
              ("fixup", 0, 0))  # fmt: skip
"""The rows of GradInit's CIFAR-10 table (Zhu et al. 2021; + LSUV, ZerO, Fixup): (row name, extra epochs, warmup)."""


def _table(suite: str, ds: bench_data.Dataset, archs: dict[str, Callable[[bool], nn.Module]],
           seed: int, base: Recipe, progress, device: str) -> list[Run]:  # fmt: skip
    """One seed of GradInit's table on ``ds``: every architecture with and without BN, every
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
    """GradInit's table (Zhu et al. 2021) scaled to CPU: VGG-like and ResNet-like CNNs, with and without
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
    """GradInit's table (Zhu et al. 2021) on CIFAR-10 itself, GradInit's released recipe in full: batch 128, lr 0.1,
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


def _models(seeds: int, steps: int, progress, names: list[str] | None = None) -> list[Run]:
    """Real architectures against their authors' own init (:mod:`initlab.bench.architectures`):
    per model and start (``initlab.init``'s default, the model's own init, ``kaiming_normal_``
    everywhere), the initial loss on random inputs and labels in train mode, each layer's output
    std, and the held-out loss after ``steps`` Adam steps (lr 1e-3, batch 32) on US first names
    (language models, next character) or digits (vision, 32x32). Models that need transformers
    are reported as unavailable when it is missing."""
    from . import architectures as A

    chosen = names or list(A.ARCHITECTURES)
    for n in chosen:
        check_choice("architecture", n, A.ARCHITECTURES)
    tasks: dict[str, A.Task] = {}
    runs = []
    for name in chosen:
        arch = A.ARCHITECTURES[name]
        for seed in range(seeds):
            for how in A.INITS:
                progress(f"models {name} {how} seed {seed}")
                run = Run("models", name, how, seed, 1e-3)
                try:
                    if arch.kind not in tasks:
                        tasks[arch.kind] = (A.digit_images() if arch.kind == "vision"
                                            else A.char_blocks(17 if arch.kind == "lm" else 32))  # fmt: skip
                    t0 = time.perf_counter()
                    out = A.run_one(arch, how, tasks[arch.kind], seed, steps)
                    run.seconds = time.perf_counter() - t0
                except ImportError as exc:
                    run.error = f"unavailable: {exc}"
                    runs.append(run)
                    continue
                run.init_loss, run.losses = out["random_loss"], out["losses"]
                run.diverged = len(out["losses"]) < steps or not math.isfinite(out["val_loss"])
                run.extra.update({k: out[k] for k in ("data_loss", "val_loss", "log_classes")})
                run.extra["act_std"] = [(str(i), v) for i, v in enumerate(out["act_std"])]
                runs.append(run)
    return runs


SUITES = ("quick", "makemore", "gradinit-table", "gradinit-deep", "depth", "residual", "cifar10",
          "models", "all")  # fmt: skip


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


def _table_size(families: list[str]) -> int:
    """Runs of one seed of :func:`_table`: each family with and without BN, every row (Fixup only
    for the ResNet without BN)."""
    rows = len(TABLE_ROWS)
    return sum(2 * rows - (1 if f == "resnet" else 2) for f in families)


def _architecture_names() -> list[str]:
    from . import architectures

    return list(architectures.ARCHITECTURES)


def _gradinit_deep_size() -> int:
    """Runs per seed of ``gradinit-deep``: every row on every net, Fixup only without BN."""
    from . import gradinit_deep as deep

    return sum(1 for _, (_, key) in deep.ARCHS.items() for row in deep.ROWS
               if not (row[1] == "fixup" and key.endswith("-bn")))  # fmt: skip


def suite_size(name: str, seeds: int = 1, models: list[str] | None = None) -> int:
    """How many training runs :func:`run_suite` will do (for a progress bar with counts and ETA).

    >>> suite_size("quick")
    17
    """
    makemore, depth, residual = 6 * seeds, 2 * 4 * 7 * seeds, 2 * 4 * 7 * seeds
    table = _table_size(["vgg", "resnet"]) * seeds
    sizes = {
        "quick": (6 + 2 * 3 + 5) * seeds,
        "models": len(models or _architecture_names()) * 3 * seeds,
        "gradinit-deep": _gradinit_deep_size() * seeds,
        "makemore": makemore,
        "depth": depth,
        "residual": residual,
        "gradinit-table": table,
        "all": makemore + depth + residual + table,
        "cifar10": _table_size([m.rstrip("0123456789") for m in models or ["vgg19", "resnet110"]])
        * seeds,
    }
    return sizes.get(name, 0)


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
        ("data", data, ("cifar10",)), ("models", models, ("cifar10", "models")),
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
        runs += _makemore(seeds, 2000, say)
        runs += _depth(seeds, [30], ["torch-default", "kaiming", "initlab"], 3, say, device)
        runs += _residual(seeds, [20], [0.1],
                          ["torch-default", "kaiming", "initlab", "initlab-zero-residual", "skipinit"],
                          3, say, device)  # fmt: skip
    if name in ("makemore", "all"):
        runs += _makemore(seeds, 20000, say)
    if name in ("depth", "all"):
        methods = ["torch-default", "kaiming", "initlab", "lsuv", "gradinit", "metainit", "zerO"]
        runs += _depth(seeds, [10, 30, 50, 100], methods, epochs or 5, say, device)
    if name in ("residual", "all"):
        methods = ["torch-default", "kaiming", "initlab", "initlab-zero-residual", "skipinit",
                   "fixup", "zerO"]  # fmt: skip
        runs += _residual(seeds, [20, 50], [0.01, 0.03, 0.1, 0.3], methods, epochs or 5, say,
                          device)  # fmt: skip
    if name in ("gradinit-table", "all"):
        runs += _gradinit_table(seeds, epochs or 8, say, device)
    if name == "models":
        runs += _models(seeds, 200, say, models)
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
        elif suite == "models":
            row["init loss"] = _mean_se([r.init_loss for r in rs])
            row["log classes"] = f"{rs[0].extra.get('log_classes', math.nan):.3f}"
            row["held-out loss, 200 steps"] = _mean_se(
                [r.extra.get("val_loss", math.nan) for r in rs]
            )
            row["diverged"] = f"{sum(r.diverged for r in rs)}/{len(rs)}"
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
    if ax.get_legend_handles_labels()[0]:  # beside the axes: never over a curve or a marker
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _loss_curve(ax: Any, r: Run, color: str) -> list[float]:
    """One run's training loss per epoch from its initial loss (epoch 0); a diverged run ends in
    a cross at the epoch it diverged, a failed method gets a legend entry. Returns the plotted
    finite values."""
    if r.error:
        ax.plot([], [], color=color, label=f"{r.method}: failed ({r.error[:40]})")
        return []
    start = [r.init_loss] if math.isfinite(r.init_loss) else []
    ys = start + list(r.losses)
    xs = list(range(0 if start else 1, len(r.losses) + 1))
    finite = [v for v in ys if math.isfinite(v) and v > 0]
    label = r.method + (f" (diverged in epoch {len(r.losses) + 1})" if r.diverged else "")
    ax.plot(xs, ys, color=color, marker=".", label=label)
    if r.diverged:
        y = ys[-1] if ys and math.isfinite(ys[-1]) else (max(finite) if finite else 1.0)
        ax.plot([len(r.losses) + 1], [y], "x", color=color, ms=11, mew=2.5)
    return finite


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Loss curves per method (one figure per model; diverged runs end in a cross), the std of
    each layer's output at init per method (zeroed layers marked at the bottom), and accuracy vs
    depth (bars when the suite has one depth)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_model: dict[tuple[str, str, float], list[Run]] = {}
    for r in runs:
        by_model.setdefault((r.suite, r.model, r.lr), []).append(r)
    for (suite, model, lr), rs in by_model.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, r in enumerate(x for x in rs if x.seed == 0):
            if suite == "makemore":
                if r.losses:
                    every = r.extra.get("loss_every", 1)
                    ax.plot([i * every for i in range(len(r.losses))], r.losses,
                            label=r.method + (" (diverged)" if r.diverged else ""))  # fmt: skip
            else:
                _loss_curve(ax, r, f"C{i % 10}")
        ax.set_title(f"{suite}: {model}, lr {lr:g} (seed 0)")
        if suite == "makemore":
            ax.set_xlabel("training step (loss of one batch of 32)")
            ax.set_ylabel("training loss (cross-entropy, nats; log scale)")
        else:
            ax.set_xlabel("epoch (0: at initialization)")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_ylabel("training loss (cross-entropy, nats; log scale)")
        paths.append(_save_log_plot(fig, ax, out / f"loss_{suite}_{model}_lr{lr:g}.png"))
    by_net: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if r.extra.get("act_std") and r.seed == 0:
            by_net.setdefault((r.suite, r.model), []).append(r)
    for (suite, model), rs in by_net.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        seen: dict[str, list[int]] = {}
        positive = [v for r in rs for _, v in r.extra["act_std"] if v > 0 and math.isfinite(v)]
        floor = min(positive) / 4 if positive else 1e-3
        for r in rs:
            if r.method in seen:  # the same init at several lrs: one curve
                continue
            color = f"C{len(seen) % 10}"
            stds = [v for _, v in r.extra["act_std"]]
            xs = list(range(1, len(stds) + 1))
            masked = [v if v > 0 and math.isfinite(v) else float("nan") for v in stds]
            ax.plot(xs, masked, marker=".", color=color, label=r.method)
            zeros = [x for x, v in zip(xs, stds, strict=True) if v == 0]
            seen[r.method] = zeros
            if zeros:  # zeroed layers (ZerO, SkipInit, Fixup): marked, not drawn at 1e-12
                ax.plot(zeros, [floor] * len(zeros), "v", color=color, ms=6, ls="none",
                        label=f"{r.method}: output exactly 0 ({len(zeros)} layers)")  # fmt: skip
        ax.set_title(f"{suite}: {model}, output std per layer at init (seed 0)")
        ax.set_xlabel("Linear/conv layer, in call order")
        ax.set_ylabel("std of the layer's output (log scale)")
        paths.append(_save_log_plot(fig, ax, out / f"act_std_{suite}_{model}.png"))
    model_runs = [r for r in runs if r.suite == "models" and r.seed == 0 and r.extra.get("act_std")]
    if model_runs:
        paths.append(_models_plot(model_runs, out))
    depth_runs = [r for r in runs if r.suite == "depth"]
    if depth_runs:
        paths.append(_plot_depth(plt, depth_runs, out / "accuracy_vs_depth.png"))
    return paths


def _plot_depth(plt: Any, depth_runs: list[Run], path: Path) -> Path:
    """Test accuracy against depth per method; with one depth, bars per method (a line through
    one point per method says nothing). Diverged runs count as accuracy 0 and are marked."""
    depths = sorted({int(r.model[3:].split("-")[0]) for r in depth_runs})
    methods = list(dict.fromkeys(r.method for r in depth_runs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, act in zip(axes, ("tanh", "relu"), strict=True):
        for k, method in enumerate(methods):
            pts: dict[int, list[float]] = {}
            bad: dict[int, int] = {}
            for r in depth_runs:
                if r.method == method and r.model.endswith(act):
                    d = int(r.model[3:].split("-")[0])
                    failed = r.diverged or bool(r.error) or math.isnan(r.acc_final)
                    pts.setdefault(d, []).append(0.0 if failed else r.acc_final)
                    bad[d] = bad.get(d, 0) + int(failed)
            xs = sorted(pts)
            ys = [statistics.mean(pts[x]) for x in xs]
            if len(depths) == 1:
                height = ys[0] if ys else 0.0
                ax.bar(k, height, color=f"C{k % 10}")
                n_bad = bad.get(depths[0], 0)
                text = f"{height:.2f}" + (f" ({n_bad} diverged)" if n_bad else "")
                ax.text(k, height + 0.01, text, ha="center", va="bottom", fontsize=8,
                        color="C3" if n_bad else "black")  # fmt: skip
            else:
                ax.plot(xs, ys, marker="o", color=f"C{k % 10}", label=method)
                marks = [x for x in xs if bad.get(x)]
                if marks:
                    ax.plot(marks, [statistics.mean(pts[x]) for x in marks], "x", ms=10, mew=2,
                            color=f"C{k % 10}")  # fmt: skip
        if len(depths) == 1:
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"plain MLP, depth {depths[0]}, {act}: test accuracy")
            ax.set_xlabel("init method")
        else:
            ax.set_title(f"plain MLP, {act}: test accuracy vs depth (x: diverged)")
            ax.set_xlabel("depth (hidden layers)")
            ax.legend(fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy (fraction)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _models_plot(runs: list[Run], out: Path) -> Path:
    """The models suite in one figure: per architecture, each layer's output std at init
    (seed 0) for every start, in call order, log scale."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.model for r in runs))
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for r in runs:
            if r.model == name:
                stds = [v if v > 0 else math.nan for _, v in r.extra["act_std"]]  # zero: no point
                ax.plot(range(1, len(stds) + 1), stds, marker=".", markersize=3, label=r.method)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("layer (call order)", fontsize=7)
        ax.set_ylabel("output std (log)", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("output std of each Linear/conv/embedding at init, in call order (seed 0)")
    fig.tight_layout()
    path = out / "models_act_std.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
