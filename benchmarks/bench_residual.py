"""Residual-aware init on real data: does the network train at large learning rates?

Part 1 (issue 6): a residual MLP without normalization, ``stem -> blocks x (x + fc2(relu(fc1(x))))
-> head``, on scikit-learn digits (1437 train / 360 test) with pixels scaled to [0, 1]
(``--inputs standardized`` for per-feature standardization), SGD momentum 0.9, batch 64, a few
epochs, for 20 and 50 blocks and learning rates 0.01, 0.03, 0.1, 0.3, under:

* ``default``   PyTorch's own init (``kaiming_uniform(a=sqrt 5)``, i.e. std ``1/sqrt(3 fan_in)``);
* ``kaiming``   ``initlab.init(model, "kaiming_normal", residual_scale=False)`` (He on every
  layer, branch ends too);
* ``zero-init`` the same with ``rules={"residual_out": "zeros"}`` (``zero_module``);
* ``skipinit``  PyTorch's init, then :func:`initlab.skipinit` (alpha = 0);
* ``fixup``     :func:`initlab.fixup` with its ``param_groups`` (biases and
  scalars trained at lr/10, the official recipe);
* ``zerO``      :func:`initlab.zerO_init` (ZerO).

A run "diverged" when its training loss is not finite; its accuracy is printed as ``NaN``.

The input scale matters at lr 0.3: standardized inputs have ``||x||^2 = 64`` per example against
~15 in [0, 1], and with SkipInit's branches at zero the net is the linear map ``head(stem(x))``,
whose largest stable step shrinks with the input scale: SkipInit trains at lr 0.3 on [0, 1] pixels
and diverges there on standardized ones (a fact about the skip path, not about the branches).

Part 2 (``--transformer``): a tiny character-level GPT (``initlab.bench.models.char_transformer``)
on first names (the ``names`` package, offline), next-character loss on held-out names after a
fixed number of Adam steps: PyTorch's default init with pre-LN blocks (GPT-2's layout) and with
post-LN blocks (the original Transformer's, the one that needs warmup), each with and without
linear warmup, versus T-Fixup without LayerNorm and without warmup.

Threads are pinned (``--threads``, default 1) because the thread count changes results.

    python benchmarks/bench_residual.py                    # ~4 min: 2 seeds, 2 epochs
    python benchmarks/bench_residual.py --seeds 0 1 2 --epochs 5 --transformer
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from initlab import fixup, skipinit, tfixup, zerO_init
from initlab.bench.data import digits, names
from initlab.bench.models import char_transformer, residual_mlp
from initlab.planning import init

METHODS = ("default", "kaiming", "zero-init", "skipinit", "fixup", "zerO")


def build(
    method: str, blocks: int, width: int, seed: int, x: torch.Tensor
) -> tuple[nn.Module, list[dict]]:
    """The model initialized by ``method`` and its optimizer parameter groups (lr multipliers)."""
    torch.manual_seed(seed)  # only the 'default' init reads the global RNG
    model = residual_mlp(64, 10, blocks=blocks, width=width)
    example = x[:8]
    if method == "kaiming":  # every layer, branch ends too, at the plain Kaiming scale
        init(model, "kaiming_normal", example=example, seed=seed, residual_scale=False)
    elif method == "zero-init":
        init(model, "kaiming_normal", example=example, seed=seed, rules={"residual_out": "zeros"})
    elif method == "skipinit":  # on the model as built: SkipInit changes nothing else
        skipinit(model, example)
    elif method == "fixup":  # the official recipe's groups: biases and scales at lr/10
        res = fixup(model, example, seed=seed)
        return model, [{"params": g["params"], "mult": g["lr"]} for g in res.param_groups(1.0)]
    elif method == "zerO":
        zerO_init(model, example, seed=seed)
    scalars = [
        p for n, p in model.named_parameters() if n.endswith(("bias_in", "bias_out", ".scale"))
    ]
    others = [p for p in model.parameters() if all(p is not s for s in scalars)]
    groups = [{"params": others, "mult": 1.0}]
    if scalars:
        groups.append({"params": scalars, "mult": 0.1})
    return model, groups


def train_mlp(
    method: str,
    blocks: int,
    width: int,
    lr: float,
    seed: int,
    epochs: int,
    batch: int,
    unit: bool = True,
) -> float:
    """Test accuracy after training, or NaN when the training loss went non-finite."""
    ds = digits(seed=seed, unit=unit)
    model, groups = build(method, blocks, width, seed, ds.x_train)
    opt = torch.optim.SGD(
        [{"params": g["params"], "lr": lr * g["mult"]} for g in groups], momentum=0.9
    )
    gen = torch.Generator().manual_seed(seed)
    n = ds.x_train.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
            if not torch.isfinite(loss):
                return math.nan
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(ds.x_test)
    if not torch.isfinite(logits).all():
        return math.nan
    return float((logits.argmax(1) == ds.y_test).float().mean())


def cell(accs: list[float]) -> str:
    ok = [a for a in accs if not math.isnan(a)]
    if not ok:
        return "NaN"
    text = f"{statistics.mean(ok):.2f}"
    if len(ok) > 1:
        text += f"±{statistics.pstdev(ok):.2f}"
    if len(ok) < len(accs):
        text += f" ({len(accs) - len(ok)} NaN)"
    return text


def part1(args: argparse.Namespace) -> None:
    print(f"residual MLP on digits ({args.inputs} inputs): width {args.width}, batch {args.batch}, {args.epochs} epochs, "
          f"SGD momentum 0.9, seeds {args.seeds}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print("test accuracy, mean±std over seeds (NaN: training loss not finite)")
    for blocks in args.blocks:
        header = f"{'blocks ' + str(blocks):<12}" + "".join(
            f"{'lr ' + str(lr):>18}" for lr in args.lrs
        )
        print("\n" + header)
        for method in args.methods:
            row = f"{method:<12}"
            for lr in args.lrs:
                accs = [
                    train_mlp(
                        method,
                        blocks,
                        args.width,
                        lr,
                        s,
                        args.epochs,
                        args.batch,
                        args.inputs == "unit",
                    )
                    for s in args.seeds
                ]
                row += f"{cell(accs):>18}"
            print(row, flush=True)


# --------------------------------------------------------------------------- transformer

VOCAB = ".abcdefghijklmnopqrstuvwxyz"


def name_sequences(block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y) for train and test: '.' + name + '.', cut/padded to ``block + 1``; pad targets -1."""
    words = names(seed=42)
    stoi = {c: i for i, c in enumerate(VOCAB)}
    rows = []
    for w in words:
        ids = [0] + [stoi[c] for c in w] + [0]
        ids = (ids + [-1] * (block + 1))[: block + 1]
        rows.append(ids)
    data = torch.tensor(rows)
    x, y = data[:, :-1].clamp(min=0), data[:, 1:]
    n = int(0.9 * len(words))
    return x[:n], y[:n], x[n:], y[n:]


def train_gpt(
    setup: str, lr: float, seed: int, steps: int, layers: int, warmup: int
) -> tuple[float, float]:
    """(held-out loss at the end, worst training loss after step 50); NaN when it diverged."""
    block = 16
    xtr, ytr, xte, yte = name_sequences(block)
    torch.manual_seed(seed)
    norm = setup != "tfixup"
    model = char_transformer(
        vocab=27, block=block, d_model=64, n_head=4, n_layer=layers, norm=norm,
        post_ln=setup.startswith("post-ln"),
    )  # fmt: skip
    if setup == "tfixup":
        tfixup(model, xtr[:4], seed=seed, norms="remove")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    use_warmup = setup.endswith("+warmup")
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for step in range(steps):
        if use_warmup:
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup)
        idx = torch.randint(0, xtr.shape[0], (64,), generator=gen)
        logits = model(xtr[idx])
        loss = F.cross_entropy(logits.reshape(-1, 27), ytr[idx].reshape(-1), ignore_index=-1)
        if not torch.isfinite(loss):
            return math.nan, math.nan
        if step >= 50:
            worst = max(worst, float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        test = F.cross_entropy(model(xte).reshape(-1, 27), yte.reshape(-1), ignore_index=-1)
    return float(test), worst


def part2(args: argparse.Namespace) -> None:
    print(f"\nchar-level GPT on names: {args.gpt_layers} layers, d 64, Adam, {args.gpt_steps} steps, "
          f"batch 64, warmup {args.warmup} steps where used, seeds {args.seeds}")  # fmt: skip
    print(
        "held-out loss per character at the end / worst training loss after step 50 (NaN: diverged)"
    )
    setups = args.setups
    print(f"{'setup':<16}" + "".join(f"{'lr ' + str(lr):>22}" for lr in args.gpt_lrs))
    for setup in setups:
        row = f"{setup:<16}"
        for lr in args.gpt_lrs:
            res = [
                train_gpt(setup, lr, s, args.gpt_steps, args.gpt_layers, args.warmup)
                for s in args.seeds
            ]
            tests = [r[0] for r in res if not math.isnan(r[0])]
            worst = [r[1] for r in res if not math.isnan(r[1])]
            if not tests:
                text = "NaN"
            elif max(worst) > 3 * math.log(27):  # finite but blown up
                text = f"diverged ({max(worst):.1e})"
            else:
                text = f"{statistics.mean(tests):.3f} / {max(worst):.2f}"
            row += f"{text:>22}"
        print(row, flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--blocks", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--inputs", choices=["unit", "standardized"], default="unit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-mlp", action="store_true", help="only the transformer part")
    ap.add_argument("--transformer", action="store_true", help="also run the char-level GPT part")
    ap.add_argument("--gpt-layers", type=int, default=6)
    ap.add_argument("--gpt-steps", type=int, default=600)
    ap.add_argument("--gpt-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument(
        "--setups",
        nargs="+",
        default=["pre-ln", "pre-ln+warmup", "post-ln", "post-ln+warmup", "tfixup"],
        choices=["pre-ln", "pre-ln+warmup", "post-ln", "post-ln+warmup", "tfixup"],
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # a default-init deep net makes denormals: 3-5x slower steps
    start = time.perf_counter()
    if not args.skip_mlp:
        part1(args)
    if args.transformer or args.skip_mlp:
        part2(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
