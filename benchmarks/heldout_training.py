"""Held-out training checks of the default (issue #14): depths, activations and block counts the
bench suites do not run, each with ``initlab.init``, ``kaiming_normal_`` everywhere and PyTorch's
default, under the suites' own recipes.

* ``plain``: plain MLPs (width 256, no norm, no skip) of depth 5-40 with tanh, ReLU, leaky ReLU
  (0.2), ELU, SELU, GELU and SiLU, on standardized digits; the quick suite's recipe (SGD
  momentum 0.9, lr 0.01, batch 64, 3 epochs).
* ``residual``: residual MLPs without normalization (width 128) of 5-100 blocks at lr 0.01,
  0.03 and 0.1; the residual suite's recipe (digits in [0, 1], SGD momentum 0.9, batch 64, 3
  epochs).

Test accuracy after the first epoch / best of the 3 epochs, mean over the seeds (a diverged run
counts as 0), and the initial loss on the test set; a row is marked where the default is not the
best of the three on either figure. About 5 min (plain) + 3 min (residual) per 2 seeds on one
thread::

    PYTHONPATH=src python benchmarks/heldout_training.py plain --depths 5 8 12 20 40
    PYTHONPATH=src python benchmarks/heldout_training.py residual --blocks 5 10 30 100
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections import defaultdict

import torch
from torch import nn

from initlab.bench import data as bench_data
from initlab.bench import models as bench_models
from initlab.bench.training import Recipe, Run, train_classifier

ACTIVATIONS = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU,
    "selu": nn.SELU, "gelu": nn.GELU, "silu": nn.SiLU,
}  # fmt: skip
METHODS = ("torch-default", "kaiming", "initlab")


def plain_mlp(depth: int, activation: str, width: int = 256) -> nn.Sequential:
    """``depth`` Linear layers (64 -> width ... -> 10), ``activation`` between each two."""
    dims = [64] + [width] * (depth - 1)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(dims):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], 10))


def _score(run: Run) -> tuple[float, float, float]:
    """(Acc_1, Acc_best, initial loss), a diverged or failed run at accuracy 0."""
    acc1, best = run.acc_1, run.acc_best
    return (0.0 if math.isnan(acc1) else acc1, 0.0 if math.isnan(best) else best, run.init_loss)


def plain(depths: list[int], activations: list[str], seeds: int) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed)
        for act, depth in itertools.product(activations, depths):
            for method in METHODS:
                run = Run("heldout", f"mlp{depth}-{act}", method, seed, 0.01)
                build = lambda d=depth, a=act: plain_mlp(d, a)  # noqa: E731
                train_classifier(build, method, ds, Recipe(lr=0.01, epochs=3), seed, run)
                rows[run.model][method].append(_score(run))
    return rows


def residual(blocks: list[int], lrs: list[float], seeds: int) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for seed in range(seeds):
        ds = bench_data.digits(seed=seed, unit=True)
        for n, lr in itertools.product(blocks, lrs):
            for method in METHODS:
                run = Run("heldout", f"resmlp{n} lr {lr:g}", method, seed, lr)
                build = lambda k=n: bench_models.residual_mlp(64, 10, k, 128)  # noqa: E731
                train_classifier(build, method, ds, Recipe(lr=lr, epochs=3), seed, run)
                rows[run.model][method].append(_score(run))
    return rows


def table(rows: dict[str, dict[str, list]]) -> str:
    """Markdown: one row per model, ``Acc_1 / best (initial loss)`` per method."""
    out = [
        "| model | " + " | ".join(METHODS) + " | default best? |",
        "|---" * (len(METHODS) + 2) + "|",
    ]
    for model, by_method in rows.items():
        means = {m: [statistics.fmean(col) for col in zip(*by_method[m], strict=True)]
                 for m in METHODS}  # fmt: skip
        cells = [f"{a1:.2f} / {b:.2f} ({loss:.2f})" for a1, b, loss in means.values()]
        ours = means["initlab"]
        best = all(ours[i] >= max(means[m][i] for m in METHODS) - 0.01 for i in (0, 1))
        out.append(f"| {model} | " + " | ".join(cells) + f" | {'yes' if best else '**no**'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["plain", "residual"])
    ap.add_argument("--depths", type=int, nargs="+", default=[5, 8, 12, 20, 40])
    ap.add_argument(
        "--activations", nargs="+", default=list(ACTIVATIONS), choices=list(ACTIVATIONS)
    )
    ap.add_argument("--blocks", type=int, nargs="+", default=[5, 10, 30, 100])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.part == "plain":
        rows = plain(args.depths, args.activations, args.seeds)
    else:
        rows = residual(args.blocks, args.lrs, args.seeds)
    print(table(rows))


if __name__ == "__main__":
    main()
