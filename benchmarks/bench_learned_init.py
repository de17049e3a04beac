"""Learned init on the depth challenge: 100-layer plain MLPs on standardized digits.

Recipe (REFERENCE.md): width 256, no normalization, SGD momentum 0.9, lr 0.01, batch 64, 5 epochs,
biases zero, 80/20 stratified split. Rows: torch ``kaiming_normal_`` defaults, ``initlab.init``
(kaiming_normal with the traced activation gains), and ``initlab.init`` followed by LSUV, GradInit
(``lr=0.01``, the training lr) and MetaInit. Prints test accuracy after epoch 1 and 5 per seed and
the cost of each method in forward/backward passes and in wall time relative to one epoch.

    .venv/bin/python benchmarks/bench_learned_init.py --seeds 0 1 2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab import gradinit, lsuv, metainit
from initlab.bench.data import digits
from initlab.bench.models import plain_mlp

LR, MOMENTUM, BATCH, EPOCHS, DEPTH, WIDTH = 0.01, 0.9, 64, 5, 100, 256


def batches(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        idx = torch.randperm(len(x), generator=g)
        out += [(x[idx[i : i + BATCH]], y[idx[i : i + BATCH]]) for i in range(0, len(x), BATCH)]
    return out


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        out = net(x)
    if not torch.isfinite(out).all():
        return float("nan")
    return float((out.argmax(1) == y).float().mean())


def train(net: nn.Module, ds, seed: int) -> tuple[list[float], float]:
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    accs, t0 = [], time.perf_counter()
    for epoch in range(EPOCHS):
        for xb, yb in batches(ds.x_train, ds.y_train, 1000 * seed + epoch):
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        accs.append(accuracy(net, ds.x_test, ds.y_test))
    return accs, (time.perf_counter() - t0) / EPOCHS


def build(act: str, seed: int, base: str) -> nn.Module:
    """The net under one of the bases: ``kaiming`` (torch's ``kaiming_normal_``, biases 0),
    ``init`` (``initlab.init`` defaults), ``orth`` (``initlab.init`` with orthogonal gain 1, the
    critical point of tanh) or ``zerO`` (``initlab.init(scheme="ZerO")``)."""
    torch.manual_seed(seed)  # a benchmark script, not library code
    net = plain_mlp(64, 10, depth=DEPTH, width=WIDTH, activation=act)
    example = torch.zeros(2, 64)
    if base == "kaiming":
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
    elif base == "init":
        initlab.init(net, example=example, seed=seed)
    elif base == "orth":
        initlab.init(
            net, example=example, seed=seed, rules={"weight": ("orthogonal", {"gain": 1.0})}
        )
    elif base == "zerO":
        initlab.init(net, example=example, seed=seed, scheme="ZerO")
    else:
        raise SystemExit(f"unknown base {base!r}: use kaiming, init, orth or zerO")
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--acts", nargs="+", default=["tanh", "relu"])
    ap.add_argument(
        "--rows",
        nargs="+",
        default=[
            "kaiming",
            "init",
            "init+lsuv",
            "init+gradinit",
            "init+metainit",
            "orth",
            "orth+gradinit",
            "zerO",
            "zerO+gradinit",
        ],
        help="BASE or BASE+METHOD; BASE in kaiming/init/orth/zerO, METHOD in lsuv/gradinit/metainit",
    )
    ap.add_argument("--gradinit-iters", type=int, default=390)
    ap.add_argument("--scale-lr", type=float, default=1e-2)
    ap.add_argument("--gamma", type=float, default=None)
    ap.add_argument(
        "--raw-grad",
        action="store_true",
        help="SGD look-ahead with g (Algorithm 1 as printed), not g/|g|",
    )
    ap.add_argument("--metainit-iters", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"threads={args.threads} depth={DEPTH} width={WIDTH} lr={LR} momentum={MOMENTUM} batch={BATCH} "
        f"epochs={EPOCHS} gradinit_iters={args.gradinit_iters} scale_lr={args.scale_lr} gamma={args.gamma} "
        f"metainit_iters={args.metainit_iters} raw_grad={args.raw_grad}"
    )
    print(
        f"{'act':5} {'row':14} {'seed':>4} {'acc@1':>6} {'acc@5':>6} {'init s':>7} {'epoch s':>7} {'cost/epoch':>10}  passes"
    )
    results: dict[tuple[str, str], list[float]] = {}
    for act in args.acts:
        for seed in args.seeds:
            ds = digits(seed=seed)
            for row in args.rows:
                base, _, method = row.partition("+")
                net = build(act, seed, base)
                t0 = time.perf_counter()
                passes = "-"
                if method == "lsuv":
                    r = lsuv(net, ds.x_train[: BATCH * 4], seed=seed, progress=False)
                    passes = f"{r.forward_passes} fwd (batch {BATCH * 4})"
                elif method == "gradinit":
                    data = batches(ds.x_train, ds.y_train, 7 + seed, epochs=1)
                    r = gradinit(
                        net,
                        F.cross_entropy,
                        data,
                        lr=LR,
                        iters=args.gradinit_iters,
                        scale_lr=args.scale_lr,
                        gamma=args.gamma,
                        normalize_grad=not args.raw_grad,
                        progress=False,
                    )
                    n_obj = sum(not h.constrained for h in r.history)
                    n_con = len(r.history) - n_obj
                    # objective step: fwd+bwd (create_graph) on 2B, fwd+bwd on 2B; constraint: fwd+bwd+double-bwd on 2B
                    passes = f"{n_obj} obj + {n_con} constr iters (~{2 * n_obj + 2 * n_con} fwd/bwd at batch {2 * BATCH})"
                elif method == "metainit":
                    r = metainit(
                        net,
                        F.cross_entropy,
                        input_shape=(BATCH, 64),
                        num_classes=10,
                        iters=args.metainit_iters,
                        seed=seed,
                        progress=False,
                    )
                    passes = f"{len(r.history)} x (fwd + bwd + 2 double-bwd) at batch {BATCH}; GQ {r.history[0]:.3g}->{r.history[-1]:.3g}"
                init_s = time.perf_counter() - t0
                accs, epoch_s = train(net, ds, seed)
                results.setdefault((act, row), []).append(accs[-1])
                print(
                    f"{act:5} {row:14} {seed:4d} {accs[0]:6.3f} {accs[-1]:6.3f} {init_s:7.2f} {epoch_s:7.2f} "
                    f"{init_s / epoch_s:10.1f}  {passes}",
                    flush=True,
                )
    print("\nmean test accuracy after 5 epochs (min..max over seeds):")
    for (act, row), accs in results.items():
        print(
            f"{act:5} {row:14} {statistics.fmean(accs):.3f} ({min(accs):.3f}..{max(accs):.3f}) n={len(accs)}"
        )


if __name__ == "__main__":
    main()
