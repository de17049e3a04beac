"""What the two held-out surveys (``zoo.py``: transformers models, ``vision_zoo.py``:
torchvision-style CNNs, issue #14) check alike: the initial-loss criteria (b) and the meta-device
check (d), and their command line. The scripts import it from their own folder (they put it on ``sys.path``, so loading
them by file path, as the tests do, works too)."""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

import initlab

ABOVE_OWN = 0.02
"""(b): initlab's initial loss may exceed the model's own init's by at most this (nats)."""

FROM_LOG_C = 0.05
"""(b): and lie within this of ``log(classes)`` (a survey may allow more for a tied head)."""


def loss_failures(row: dict[str, Any], tol: float = FROM_LOG_C) -> list[str]:
    """The failed initial-loss criteria (b) of a row with ``initlab``, ``own`` and ``log_c``."""
    bad = []
    if row["initlab"] > row["own"] + ABOVE_OWN:
        bad.append(f"(b) above own by {row['initlab'] - row['own']:.3f}")
    if abs(row["initlab"] - row["log_c"]) > tol:
        bad.append(f"(b) {row['initlab'] - row['log_c']:+.3f} from log(C)")
    return bad


def meta_check(
    example: Callable[[], tuple[Any, Any]],
    build_meta: Callable[[], nn.Module],
    loss: Callable[[nn.Module, Any, Any], float],
) -> str:
    """(d): ``"ok"`` when the model built on the meta device, then ``initlab.init(...,
    device="cpu")`` on ``example()``'s input, runs a forward with a finite ``loss`` in train
    mode; else what went wrong (the loss, or the error, cut to 120 characters)."""
    try:
        inputs, target = example()
        meta = build_meta()
        initlab.init(meta, example=inputs, seed=0, device="cpu")
        meta_loss = loss(meta.train(), inputs, target)
        return "ok" if math.isfinite(meta_loss) else f"loss {meta_loss}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:120]


def parse(argv: list[str] | None, doc: str, models: Iterable[str]) -> tuple[list[str], bool]:
    """A survey's command line (``--models a,b``, ``--traceback``): the models to run (default:
    all) and whether to print init errors in full. Sets one thread and silences warnings."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--traceback", action="store_true", help="print init errors in full")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    return [n for n in args.models.split(",") if n] or list(models), args.traceback


def run(names: list[str], survey: Callable[[str], dict[str, Any]],
        verdict: Callable[[dict[str, Any]], list[str]], header: str,
        cells: Callable[[str, dict[str, Any]], str], full_traceback: bool) -> int:  # fmt: skip
    """Survey each model and print one row (``cells(name, row)``, then its CPU seconds and the
    verdict), a model that does not build a row of its own; returns how many failed."""
    print(header)
    failed = 0
    for name in names:
        t0 = time.process_time()
        try:
            row = survey(name)
        except Exception as e:  # the model does not build here: a row, not a crash
            print(f"{name}  not built: {type(e).__name__}: {e}"[:200])
            failed += 1
            continue
        bad = verdict(row)
        failed += bool(bad)
        print(f"{cells(name, row)}{time.process_time() - t0:>6.1f}  "
              f"{'PASS' if not bad else '; '.join(bad)}", flush=True)  # fmt: skip
        if full_traceback and "trace" in row:
            print(row["trace"])
    print(f"{len(names) - failed}/{len(names)} pass")
    return failed
