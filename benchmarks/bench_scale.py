"""Initialize a >= 1 B parameter meta-device model with initlab: fill rate and peak memory.

Each measurement runs in its own subprocess (so the peak RSS, ``VmHWM``, is that run's alone):

* ``torch normal_``: the baseline. ``torch.empty`` + ``Tensor.normal_`` for every weight of the
  same model (same shapes, all kept alive), i.e. what an RNG-bound init must do at least;
* ``initlab <scheme>``: ``initlab.plan.init(meta_model, scheme)`` (trace + plan + materialize +
  draw), reported against the baseline's fill rate and against the parameters' bytes;
* ``initlab.init on the model in memory``: the same model allocated and filled first, then
  ``init`` with the default ``transactional=True`` (undo on error): its peak RSS against the
  weights' bytes says what undo costs (the peak is reset after the model is built);
* ``torch trunc_normal_``: ``nn.init.trunc_normal_`` over the same tensors (initlab's
  trunc_normal sampler), and a rejection-sampling prototype (normal_, redraw outside [a, b]);
* orthogonal: ``initlab.init`` of a one-layer meta model with ``orthogonal`` against
  ``torch.nn.init.orthogonal_`` on an n x n matrix.

Usage (defaults: 16 x Linear(8192, 8192) = 1.07 B parameters, 4.3 GB in float32, 2 threads)::

    .venv/bin/python benchmarks/bench_scale.py [--layers 16] [--width 8192] [--threads 2]

Timings are wall-clock and include page faults of the freshly allocated memory in both the
baseline and initlab. Run on an otherwise idle machine; the figures depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _model(layers: int, width: int) -> nn.Module:
    import torch
    from torch import nn

    with torch.device("meta"):
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(width, width)] + ([nn.ReLU()] if i < layers - 1 else [])
        return nn.Sequential(*blocks)


def child(mode: str, layers: int, width: int, threads: int) -> dict[str, float]:
    """One measurement; returns seconds, element count, peak and start RSS."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    import initlab  # noqa: F401  (import cost outside the timing)
    from initlab.plan import init, plan

    out: dict[str, float] = {}
    n = layers * width * width
    shapes = [(width, width)] * layers
    gen = torch.Generator().manual_seed(0)
    rss0 = _rss_bytes()
    if mode in ("normal", "trunc", "trunc_reject"):
        keep = []
        t = time.perf_counter()
        for s in shapes:
            w = torch.empty(s)
            if mode == "normal":
                w.normal_(0.0, 0.02, generator=gen)
            elif mode == "trunc":
                nn.init.trunc_normal_(w, 0.0, 0.02, -0.04, 0.04, generator=gen)
            else:  # rejection: N(0, s) then redraw outside [-2s, 2s] (4.6 % of them) until none
                w.normal_(0.0, 0.02, generator=gen)
                bad = w.abs() > 0.04
                while (k := int(bad.sum())) > 0:
                    w[bad] = torch.empty(k).normal_(0.0, 0.02, generator=gen)
                    bad = w.abs() > 0.04
            keep.append(w)
        out["seconds"] = time.perf_counter() - t
        if mode == "normal":  # the same fill over memory already touched (no page faults)
            t = time.perf_counter()
            for w in keep:
                w.normal_(0.0, 0.02, generator=gen)
            out["warm_seconds"] = time.perf_counter() - t
    elif mode.startswith("initlab:"):
        scheme = mode.split(":", 1)[1]
        t = time.perf_counter()  # torch imports its meta kernels (torch._decomp, _dynamo) once
        plan(_model(1, 8), example=torch.randn(2, 8))
        out["warmup_seconds"] = time.perf_counter() - t
        model = _model(layers, width)
        x = torch.randn(2, width)
        t = time.perf_counter()
        kw = {"std": 0.02} if scheme == "trunc_normal" else {}
        p = plan(model, scheme, example=x, seed=0, **kw)
        out["plan_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        p.apply()
        out["seconds"] = time.perf_counter() - t
        assert all(p.device.type == "cpu" for p in model.parameters())
        n = sum(p.numel() for p in model.parameters())
    elif mode.startswith("inmemory:"):  # the model already allocated: init with undo (default)
        scheme = mode.split(":", 1)[1]
        init(_model(1, 8), example=torch.randn(2, 8))  # one-time imports, outside the measure
        model = _model(layers, width).to_empty(device="cpu")
        with torch.no_grad():
            for w in model.parameters():
                w.normal_(0.0, 0.02, generator=gen)  # values to protect, memory touched
        rss0 = _rss_bytes()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS (the weights and the interpreter)
        t = time.perf_counter()
        init(model, scheme, example=torch.randn(2, width), seed=0)
        out["seconds"] = time.perf_counter() - t
        n = sum(p.numel() for p in model.parameters())
    elif mode.startswith("orth:"):
        size = int(mode.split(":", 1)[1])
        reps = 3 if size <= 2048 else 1
        w = torch.empty(size, size)
        t = time.perf_counter()
        for _ in range(reps):
            nn.init.orthogonal_(w, generator=gen)
        out["torch_seconds"] = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps):
            init(_model(1, size), "orthogonal", example=torch.randn(2, size), seed=0)
        out["seconds"] = (time.perf_counter() - t) / reps
        n = size * size
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    out.update(elements=n, peak_rss=_peak_rss_bytes(), start_rss=rss0)
    return out


def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--layers", str(args.layers), "--width",
           str(args.width), "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--orthogonal", type=int, nargs="*", default=[1024, 4096])
    ap.add_argument("--schemes", nargs="*", default=["kaiming_normal", "trunc_normal"])
    ap.add_argument("--skip-trunc-baselines", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.layers, args.width, args.threads)))
        return

    params = args.layers * (args.width * args.width + args.width)
    gib = params * 4 / 2**30
    print(f"model: {args.layers} x Linear({args.width}, {args.width}) on meta = {params / 1e9:.3f} B "
          f"parameters, {gib:.2f} GiB float32; torch threads {args.threads}")  # fmt: skip
    base = run("normal", args)
    rate = base["elements"] / base["seconds"]
    print(f"{'run':34s} {'seconds':>8s} {'Melem/s':>8s} {'rate vs normal_':>15s} {'peak RSS':>9s} "
          f"{'RSS/params':>10s}")  # fmt: skip

    def row(label: str, r: dict[str, float]) -> None:
        r_rate = r["elements"] / r["seconds"]
        print(f"{label:34s} {r['seconds']:8.2f} {r_rate / 1e6:8.1f} {r_rate / rate:14.0%} "
              f"{r['peak_rss'] / 2**30:8.2f}G {r['peak_rss'] / (params * 4):9.3f}x")  # fmt: skip

    row("torch empty+normal_ (baseline)", base)
    print(f"  (same normal_ over touched memory: {base['warm_seconds']:.2f} s; "
          f"RSS before the run {base['start_rss'] / 2**20:.0f} MiB)")  # fmt: skip
    for scheme in args.schemes:
        r = run(f"initlab:{scheme}", args)
        row(f"initlab plan.apply(), {scheme}", r)
        print(
            f"  (+ trace and plan {r['plan_seconds']:.2f} s; torch's one-time meta-kernel imports "
            f"{r['warmup_seconds']:.2f} s; init total {r['seconds'] + r['plan_seconds']:.2f} s)"
        )
    for scheme in args.schemes[:1]:
        r = run(f"inmemory:{scheme}", args)
        row(f"initlab.init, in memory, {scheme}", r)
        print(f"  (transactional=True; RSS before init {r['start_rss'] / 2**30:.2f}G, peak - before "
              f"= {(r['peak_rss'] - r['start_rss']) / 2**20:.0f} MiB)")  # fmt: skip
    if not args.skip_trunc_baselines:
        row("torch empty+nn.init.trunc_normal_", run("trunc", args))
        row("empty+normal_+redraw outside 2std", run("trunc_reject", args))
    for size in args.orthogonal:
        r = run(f"orth:{size}", args)
        print(f"orthogonal {size}x{size}: initlab.init {r['seconds']:.2f} s, torch.nn.init.orthogonal_ "
              f"{r['torch_seconds']:.2f} s ({r['seconds'] / r['torch_seconds']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
