"""The CUDA path, measured and checked in one short run (needs one GPU; CI never has one).

1. **1 B parameters on the GPU**: 15 x ``Linear(8192, 8192)`` built on meta, then
   ``initlab.init(..., device="cuda")`` with ``kaiming_normal`` and ``trunc_normal(std=0.02)``,
   against the GPU limit: ``torch.empty(..., device="cuda").normal_()`` per layer. initlab draws
   every block on the CPU (so the values do not depend on the device) and copies it over: expect
   a fraction of the GPU's own fill rate, bounded by the CPU's. Peak GPU memory / parameter
   bytes is printed, and one layer is compared bit for bit with the same init on the CPU.
2. **FSDP2 on one GPU**: ``fully_shard`` a meta model on a one-rank NCCL mesh, ``to_empty`` on
   CUDA, ``plan.apply()``; the weights must equal the single-process CPU init.
3. **the bench's CUDA path**: ``initlab bench --suite quick --device cuda`` on its small models.

Usage (about 3 minutes on an H100/H200-class machine; writes ``gpu_check.json`` into ``$OUT``
when set)::

    python benchmarks/gpu_check.py [--layers 15] [--width 8192] [--skip-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn

import initlab
from initlab.planning import init, plan


def _meta_model(layers: int, width: int) -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])


def _sync() -> None:
    torch.cuda.synchronize()


def fill(layers: int, width: int) -> dict[str, Any]:
    """Limit vs initlab on the GPU, plus bit-equality with the CPU draw for layer 0."""
    out: dict[str, Any] = {"params": layers * width * width}
    init(_meta_model(1, 8), example=torch.randn(2, 8), device="cuda")  # CUDA context, imports
    g = torch.Generator(device="cuda").manual_seed(0)
    _sync()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    keep = [torch.empty(width, width, device="cuda").normal_(0, 0.02, generator=g)
            for _ in range(layers)]  # fmt: skip
    _sync()
    out["limit_s"] = time.perf_counter() - t
    out["limit_peak"] = torch.cuda.max_memory_allocated()
    del keep
    torch.cuda.empty_cache()
    for scheme, kw in [("kaiming_normal", {}), ("trunc_normal", {"std": 0.02})]:
        model = _meta_model(layers, width)
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        init(model, scheme, example=torch.randn(2, width), seed=0, device="cuda", **kw)
        _sync()
        r = {"seconds": time.perf_counter() - t, "peak": torch.cuda.max_memory_allocated()}
        cpu = _meta_model(1, width)
        init(cpu, scheme, example=torch.randn(2, width), seed=0, device="cpu", **kw)
        r["layer0_equal_to_cpu"] = torch.equal(
            model[0].weight.detach().cpu(), cpu[0].weight.detach()
        )
        out[scheme] = r
        del model
        torch.cuda.empty_cache()
    return out


def fsdp_one_gpu() -> dict[str, Any]:
    """FSDP2 on a one-rank NCCL mesh: plan on meta, shard, to_empty on CUDA, apply."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:

        def net() -> nn.Module:
            return nn.Sequential(nn.Linear(64, 1051), nn.ReLU(), nn.Linear(1051, 1001), nn.ReLU(),
                                 nn.Linear(1001, 10))  # fmt: skip

        x = torch.randn(2, 64)
        ref = net()
        init(ref, "trunc_normal", std=0.02, example=x, seed=3)
        with torch.device("meta"):
            model = net()
        p = plan(model, "trunc_normal", std=0.02, example=x, seed=3)
        mesh = init_device_mesh("cuda", (1,))
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cuda")
        p.apply(transactional=False)
        equal = all(
            torch.equal(q.full_tensor().cpu(), r.detach())
            for q, r in zip(model.parameters(), ref.parameters(), strict=True)
        )
        return {"fsdp2_equal_to_cpu": equal}
    finally:
        dist.destroy_process_group()


def bench_cuda(out_dir: str) -> dict[str, Any]:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "initlab", "bench", "--suite", "quick", "--device", "cuda",
           "--seeds", "1", "--out", out_dir]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False)
    print(res.stdout[-6000:], res.stderr[-3000:], sep="\n")
    return {"returncode": res.returncode, "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=15)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a machine with a GPU")
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    report: dict[str, Any] = {"torch": torch.__version__, "initlab": initlab.__version__,
                              "device": torch.cuda.get_device_name(), "threads": torch.get_num_threads()}  # fmt: skip
    print(f"{report['device']}, torch {report['torch']}, {report['threads']} CPU threads")
    r = fill(args.layers, args.width)
    report["fill"] = r
    pbytes = r["params"] * 4
    print(f"1 B fill ({args.layers} x Linear({args.width}), {r['params'] / 1e9:.3f} B params):")
    print(
        f"  limit, torch.empty(cuda).normal_: {r['limit_s']:.3f} s, peak {r['limit_peak'] / pbytes:.3f}x"
    )
    for scheme in ("kaiming_normal", "trunc_normal"):
        x = r[scheme]
        print(f"  initlab.init(device='cuda') {scheme}: {x['seconds']:.2f} s = "
              f"{r['limit_s'] / x['seconds']:.3f} of the limit, peak GPU memory "
              f"{x['peak'] / pbytes:.3f}x the parameters, layer 0 equal to the CPU draw: "
              f"{x['layer0_equal_to_cpu']}")  # fmt: skip
    try:
        report["fsdp"] = fsdp_one_gpu()
    except Exception as exc:  # report, do not stop the other checks
        report["fsdp"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"FSDP2 on one GPU: {report['fsdp']}")
    if not args.skip_bench:
        out_dir = os.path.join(os.environ.get("OUT") or tempfile.mkdtemp(), "bench_quick_cuda")
        report["bench"] = bench_cuda(out_dir)
        print(f"initlab bench --suite quick --device cuda: {report['bench']}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
