"""Init at scale: initlab against the fill-rate limit and against models' own init, in one run.

Two parts, each run in a fresh subprocess per torch thread count (``--threads 1 2``), so every
ratio compares runs of the same process:

* **fill rate** on a 1 B parameter model built on the meta device (15 x ``Linear(8192, 8192)``,
  no biases: 1.007 B parameters, 3.75 GiB in float32). The *limit* is fresh memory plus one
  ``normal_`` fill per layer (``torch.empty`` + ``Tensor.normal_``, all layers kept alive): what
  an RNG-bound init must do at least. Rows: ``initlab`` ``plan.apply()`` with ``kaiming_normal``
  and with ``trunc_normal(std=0.02)``, and ``trunc_normal`` with the previous sampler (a tensor
  loop: mask, ``nonzero``, ``index_put`` over the whole tensor) for comparison. Each row gives
  ``limit time / its time`` (1.0 = the limit's fill rate) and its peak RSS growth over the
  parameter bytes. The plan of the 1 B meta model is timed apart. One more row: ``initlab.init``
  (default ``transactional=True``, plan included) on the same model already allocated and filled,
  with its peak RSS over the weights' bytes and its time against the limit and against
  ``normal_`` over the same, already touched, memory.
* **models of 10 M parameters and more** (``scale_models.py``: a torchvision-style ResNet-50 and
  ViT-B/16, and transformers' Llama at 110 M from a config), built on the CPU: the model's own
  init re-run on the built model, against ``initlab.plan`` (a meta pass: no compute) +
  ``apply()`` on the same model, with the default undo and with ``transactional=False`` (the undo
  keeps no copy of the weights, so the two should cost the same), the plan with a real forward pass (how planning ran before), and the plan of the model's meta twin.

Wall times on a shared machine are inflated by other processes; the CPU-time ratios (process
time, page faults included) are steadier and are printed beside them. Usage::

    .venv/bin/python benchmarks/bench_scale.py            # full: about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --small    # 15 x Linear(2048), ResNet-50: ~1 min
    .venv/bin/python benchmarks/bench_scale.py --no-fill --threads 1 --no-real-trace  # models only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release() -> None:
    """Return freed memory to the OS, so that every run starts on fresh pages as the limit does."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _timed(fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Run ``fn``; its wall and process-CPU seconds and the peak RSS growth it caused."""
    _release()
    exact = _reset_peak()
    rss0 = _status("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    res = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    res["peak_growth"] = (_status("VmHWM") - rss0) if exact else float("nan")
    return res, out


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: min(r[k] for r in runs) for k in runs[0]}


# ---------------------------------------------------------------------------------------------
# children


def fill_child(layers: int, width: int, repeat: int, orthogonal: list[int]) -> dict[str, Any]:
    import torch
    from torch import nn

    from initlab.planning import init, plan
    from initlab.schemes import sampling as schemes  # the sampler module

    def meta_model() -> nn.Module:
        with torch.device("meta"):
            return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])

    plan(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), example=torch.randn(2, 8))  # one-time imports

    def limit() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return [torch.empty(width, width).normal_(0.0, 0.02, generator=g) for _ in range(layers)]

    def initlab_run(scheme: str, kw: dict[str, float], times: dict[str, list]) -> Callable:
        def run() -> nn.Module:
            model = meta_model()
            x = torch.randn(2, width)
            t = time.perf_counter()
            p = plan(model, scheme, example=x, seed=0, rules=every_linear(scheme, kw), **kw)
            times.setdefault("plan", []).append(time.perf_counter() - t)
            res, _ = _timed(p.apply)
            times.setdefault("apply", []).append(res)
            return model

        return run

    def every_linear(scheme: str, kw: dict[str, float]) -> dict[Any, Any]:
        """A rule that draws every layer with ``scheme``: without it the default policy makes this
        deep plain chain isometric (ZerO), and the row would not measure the scheme's fill."""
        return {nn.Linear: (scheme, dict(kw))}

    def in_memory(times: dict[str, list]) -> None:
        """``init`` (default ``transactional=True``) on the model already allocated and filled."""
        model = meta_model().to_empty(device="cpu")
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for w in model.parameters():
                w.normal_(0.0, 0.02, generator=g)  # values to protect, every page touched
        ws = [w.detach() for w in model.parameters()]
        warm, _ = _timed(lambda ws=ws: [w.normal_(0.0, 0.02, generator=g) for w in ws])
        times.setdefault("warm_limit", []).append(warm)  # the limit over memory already touched
        x = torch.randn(2, width)
        kaiming = every_linear("kaiming_normal", {})
        res, _ = _timed(lambda m=model: init(m, example=x, seed=0, rules=kaiming))
        res["peak_rss"] = float(_status("VmHWM"))  # interpreter + weights + what init added
        res["rss_before"] = res["peak_rss"] - res["peak_growth"]
        del ws
        times.setdefault("apply", []).append(res)
        del model
        _release()

    rows: dict[str, dict[str, list]] = {}
    numpy_floats = schemes._NUMPY_FLOATS
    for _ in range(repeat):
        rows.setdefault("limit", {}).setdefault("apply", []).append(_timed(limit)[0])
        in_memory(rows.setdefault("in_memory", {}))
        for label, scheme, kw in [("kaiming_normal", "kaiming_normal", {}),
                                  ("trunc_normal", "trunc_normal", {"std": 0.02}),
                                  ("trunc_normal_before", "trunc_normal", {"std": 0.02})]:  # fmt: skip
            schemes._NUMPY_FLOATS = () if label.endswith("_before") else numpy_floats
            try:
                initlab_run(scheme, kw, rows.setdefault(label, {}))()
            finally:
                schemes._NUMPY_FLOATS = numpy_floats
            _release()
    out: dict[str, Any] = {"params": layers * width * width, "orthogonal": {}}
    for size in orthogonal:
        g = torch.Generator().manual_seed(0)
        w = torch.empty(size, size)
        t = time.process_time()
        nn.init.orthogonal_(w, generator=g)
        theirs = time.process_time() - t
        t = time.process_time()
        init(
            nn.Sequential(nn.Linear(size, size)), "orthogonal", example=torch.randn(2, size), seed=0
        )
        out["orthogonal"][size] = {"torch": theirs, "initlab": time.process_time() - t}
    for label, times in rows.items():
        out[label] = _best(times["apply"])
        if "plan" in times:
            out[label]["plan"] = min(times["plan"])
        if "warm_limit" in times:
            out[label]["warm_limit"] = _best(times["warm_limit"])
    return out


def models_child(names: list[str], real_trace: bool, repeat: int = 3) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(HERE))
    from scale_models import MODELS

    from initlab.graph import trace
    from initlab.planning import plan

    plan(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)),
        example=torch.randn(1, 3, 8, 8),
    )  # one-time imports
    schemes = {
        "resnet50": ("kaiming_normal", {}),
        "vit_b16": ("xavier_uniform", {}),
        "llama": ("normal", {"std": 0.02}),
    }  # the family of the model's own init
    out: dict[str, Any] = {}
    for name in names:
        model, x, own = MODELS[name]()
        scheme, kw = schemes[name]
        r: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()), "scheme": scheme}
        runs: dict[str, list[dict[str, float]]] = {"own": [], "apply": [], "apply_nt": []}
        for _ in range(max(3, repeat)):  # interleaved: a burst of load hits all three alike
            runs["own"].append(_timed(lambda m=model, f=own: f(m))[0])
            for key, transactional in [("apply", True), ("apply_nt", False)]:
                t = time.process_time(), time.perf_counter()
                p = plan(model, scheme, example=x, seed=0, **kw)
                planned = {"cpu": time.process_time() - t[0], "wall": time.perf_counter() - t[1]}
                res, _ = _timed(lambda p=p, tr=transactional: p.apply(transactional=tr))
                runs[key].append({"plan_cpu": planned["cpu"], "plan_wall": planned["wall"], **res})
        r.update({k: _best(v) for k, v in runs.items()})
        g = trace(model, x)
        r["note"] = g.note
        if real_trace:
            t = time.process_time(), time.perf_counter()
            g_real = trace(model, x, forward="real")
            plan(model, scheme, example=x, seed=0, graph=g_real, **kw)
            r["plan_real"] = {"cpu": time.process_time() - t[0], "wall": time.perf_counter() - t[1]}
            r["same_graph"] = _same_graph(g, g_real)
        del model
        gc.collect()
        with torch.device("meta"):
            twin, _, _ = MODELS[name]()
        t = time.process_time(), time.perf_counter()
        plan(twin, scheme, example=x, seed=0, **kw)
        r["plan_twin"] = {"cpu": time.process_time() - t[0], "wall": time.perf_counter() - t[1]}
        out[name] = r
    return out


def _same_graph(a: Any, b: Any) -> bool:
    fields = ("kind", "calls", "activation", "order", "activation_param", "conflicts", "consumed")

    def sig(g: Any) -> tuple:
        layers = {
            n: ([getattr(la, f) for f in fields], sorted(la.roles)) for n, la in g.layers.items()
        }
        return layers, g.branches, g.shared, g.functional_uses, g.unreached, g.loose

    return sig(a) == sig(b)


# ---------------------------------------------------------------------------------------------
# the parent


def _child(args: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child-threads", str(threads), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _print_fill(r: dict[str, Any], threads: int, layers: int, width: int) -> None:
    gib = r["params"] * 4 / 2**30
    print(f"\nfill rate, {threads} thread(s): {layers} x Linear({width}, {width}) on meta = "
          f"{r['params'] / 1e9:.3f} B parameters, {gib:.2f} GiB float32")  # fmt: skip
    print(f"  {'run':44s} {'wall s':>7s} {'cpu s':>7s} {'vs limit':>9s} {'(cpu)':>6s} "
          f"{'peak RSS growth / param bytes':>30s}")  # fmt: skip
    lim = r["limit"]
    labels = {"limit": "limit: torch.empty + normal_ per layer",
              "kaiming_normal": "initlab apply, kaiming_normal",
              "trunc_normal": "initlab apply, trunc_normal(std=0.02)",
              "trunc_normal_before": "  the same with the previous sampler"}  # fmt: skip
    for key, label in labels.items():
        x = r[key]
        print(f"  {label:44s} {x['wall']:7.2f} {x['cpu']:7.2f} {lim['wall'] / x['wall']:9.2f} "
              f"{lim['cpu'] / x['cpu']:6.2f} {x['peak_growth'] / (r['params'] * 4):30.3f}")  # fmt: skip
    m = r["in_memory"]
    weights = r["params"] * 4
    print(f"  {'initlab.init on the model in memory (undo on)':44s} {m['wall']:7.2f} {m['cpu']:7.2f} "
          f"{lim['wall'] / m['wall']:9.2f} {lim['cpu'] / m['cpu']:6.2f} "
          f"{m['peak_growth'] / weights:30.3f}")  # fmt: skip
    w = m["warm_limit"]
    print(f"    kaiming_normal, transactional=True (default), plan included; peak RSS / weights "
          f"{m['peak_rss'] / weights:.3f} (RSS before {m['rss_before'] / weights:.3f}); vs "
          f"normal_ over the same touched memory {w['wall'] / m['wall']:.2f} "
          f"({w['cpu'] / m['cpu']:.2f} CPU)")  # fmt: skip
    print(f"  plan of the meta model (trace + decisions): {r['kaiming_normal']['plan']:.2f} s wall")
    for size, o in r["orthogonal"].items():
        print(f"  orthogonal {size}x{size}: initlab.init {o['initlab']:.2f} s CPU, "
              f"nn.init.orthogonal_ {o['torch']:.2f} s ({o['initlab'] / o['torch']:.2f}x)")  # fmt: skip


def _print_models(r: dict[str, Any], threads: int) -> None:
    print(f"\nmodels, {threads} thread(s): the model's own init vs initlab.plan + apply on the same "
          "built model (seconds: wall, then CPU in brackets)")  # fmt: skip
    print(f"  {'model':9s} {'params':>7s} {'scheme':>15s} {'own init':>13s} {'plan':>13s} "
          f"{'apply':>13s} {'(p+a)/own':>10s} {'no undo':>8s} {'plan, real fwd':>15s} "
          f"{'plan, twin':>12s}")  # fmt: skip

    def s(x: dict[str, float], w: str = "wall", c: str = "cpu") -> str:
        return f"{x[w]:5.2f} ({x[c]:4.2f})"

    for name, x in r.items():
        own, a, nt = x["own"], x["apply"], x["apply_nt"]
        ratio = (a["plan_wall"] + a["wall"]) / own["wall"]
        ratio_cpu = (a["plan_cpu"] + a["cpu"]) / own["cpu"]
        ratio_nt = (nt["plan_cpu"] + nt["cpu"]) / own["cpu"]
        real = s(x["plan_real"]) if "plan_real" in x else "-"
        print(f"  {name:9s} {x['params'] / 1e6:6.1f}M {x['scheme']:>15s} {s(own):>13s} "
              f"{s(a, 'plan_wall', 'plan_cpu'):>13s} {s(a):>13s} {ratio:4.2f} ({ratio_cpu:3.2f}) "
              f"{ratio_nt:8.2f} {real:>15s} {s(x['plan_twin']):>12s}")  # fmt: skip
        if x.get("note"):
            print(f"    note: {x['note']}")
        if "same_graph" in x and not x["same_graph"]:
            print("    the meta pass and the real pass recorded different graphs")
    print("  (p+a)/own: (plan + apply) / own init, wall (CPU); no undo: the same, CPU, with "
          "apply(transactional=False)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="15 x Linear(2048), ResNet-50 only")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--layers", type=int, default=15)
    ap.add_argument("--width", type=int, default=None, help="default 8192 (2048 with --small)")
    ap.add_argument("--models", nargs="*", default=None, help="resnet50 vit_b16 llama")
    ap.add_argument("--orthogonal", type=int, nargs="*", default=None, help="sizes (4096; 1024)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="fill runs per row, model runs (3 at least) per model; the best is kept")  # fmt: skip
    ap.add_argument("--no-real-trace", action="store_true", help="skip the real-forward plan")
    ap.add_argument("--no-fill", action="store_true", help="skip the fill-rate part: models only")
    ap.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    width = args.width or (2048 if args.small else 8192)
    models = args.models if args.models is not None else (
        ["resnet50"] if args.small else ["resnet50", "vit_b16", "llama"])  # fmt: skip
    real_trace = not (args.no_real_trace or args.small)
    if args.orthogonal is None:
        args.orthogonal = [1024] if args.small else [4096]
    if args.child:
        import torch

        torch.set_num_threads(args.child_threads)
        torch.set_num_interop_threads(1)
        if args.child == "fill":
            print(json.dumps(fill_child(args.layers, width, args.repeat, args.orthogonal)))
        else:
            print(json.dumps(models_child(models, real_trace, args.repeat)))
        return
    print(f"bench_scale: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (other processes inflate wall times)")  # fmt: skip
    common = ["--layers", str(args.layers), "--width", str(width), "--repeat", str(args.repeat),
              "--orthogonal", *map(str, args.orthogonal)]  # fmt: skip
    for threads in args.threads:
        if not args.no_fill:
            _print_fill(_child(["--child", "fill", *common], threads), threads, args.layers, width)
        if models:
            extra = ["--models", *models, "--repeat", str(args.repeat)]
            extra += [] if real_trace else ["--no-real-trace"]
            _print_models(_child(["--child", "models", *extra], threads), threads)


if __name__ == "__main__":
    main()
