"""What ``import initlab`` costs on top of ``import torch``, and how fast ``initlab --version`` is.

Each line runs in a fresh interpreter (a subprocess, ``--repeats`` times; the median is printed),
so no module is cached between runs:

* ``import torch``: the baseline every initlab user pays anyway;
* ``import torch; import initlab``: the package itself (public names load on first use);
* ``... + every public name``: ``import initlab`` then touching each name in ``initlab.__all__``,
  which imports the whole library (schemes, graph, planning, methods, diagnosis) but none of the
  heavy optional modules (``torch.distributed.tensor``, matplotlib, transformers, the bench);
* ``python -m initlab --version``: the command line's fastest path (it imports no torch).

Figures are wall-clock seconds and CPU seconds (user + system of the child); on a loaded machine
the wall figures are inflated, the CPU figures much less so. Usage::

    .venv/bin/python benchmarks/bench_import.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "python (empty)": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "import torch; import initlab": ["-c", "import torch; import initlab"],
    "... + every public name": [
        "-c",
        "import torch, initlab\nfor n in initlab.__all__: getattr(initlab, n)",
    ],
    "python -m initlab --version": ["-m", "initlab", "--version"],
}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(args: list[str]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of one fresh interpreter running ``args``."""
    cpu0, t0 = _child_cpu(), time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - t0, _child_cpu() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(repeats):  # interleaved, so a burst of load hits every case alike
        for name, args in CASES.items():
            runs[name].append(measure(args))
    median = {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
        for name, r in runs.items()
    }
    base_wall, base_cpu = median["import torch"]
    print(f"median of {repeats} fresh interpreters, seconds")
    print(f"{'':32}{'wall':>8}{'cpu':>8}{'wall - torch':>14}{'cpu - torch':>13}")
    for name, (wall, cpu) in median.items():
        over_torch = name in ("import torch; import initlab", "... + every public name")
        extra = f"{wall - base_wall:>+14.3f}{cpu - base_cpu:>+13.3f}" if over_torch else ""
        print(f"{name:32}{wall:8.3f}{cpu:8.3f}{extra}")


if __name__ == "__main__":
    main()
