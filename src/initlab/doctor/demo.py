"""The makemore demo (Karpathy 2022, "Building makemore Part 3"): the lecture's story, diagnosed.

The lecture's MLP (embedding 27x10, block 3, 200 tanh units, 27 logits) on US first names
(the ``names`` package, offline), initialized twice:

* **naive**: every parameter ``torch.randn`` (``C, W1, b1, W2, b2``): the initial loss is ~25
  instead of ``log(27) = 3.30`` and ~70% of the tanh outputs are saturated (``|h| > 0.97``);
* **fixed**: the lecture's fixes ``W2 *= 0.01``, ``b2 *= 0``, ``W1 *= 0.2``, ``b1 *= 0.01``.

:func:`main_demo` diagnoses both (with the lecture's SGD at lr 0.1 for the update:data ratios)
and writes the plots and one HTML page per init. The model and data come from
:mod:`initlab.bench.models` and :mod:`initlab.bench.data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .report import Report

__all__ = ["INITS", "main_demo", "makemore_reports", "summary"]

INITS = ("naive", "fixed")


def makemore_reports(*, batch_size: int = 512, steps: int = 20, batches: int = 4,
                     seed: int = 0) -> dict[str, Report]:  # fmt: skip
    """Diagnose the lecture's MLP under the naive and the fixed init; ``{name: Report}``."""
    from ..bench.data import char_dataset, names
    from ..bench.models import MakemoreMLP, makemore_fixed_init_, makemore_naive_init_
    from . import doctor

    data = char_dataset(names(), block_size=3, seed=42)  # the lecture's random.seed(42)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(data.x_train), (batch_size,), generator=gen)
    x, y = data.x_train[idx], data.y_train[idx]
    reports = {}
    for name, init_ in (("naive", makemore_naive_init_), ("fixed", makemore_fixed_init_)):
        model = init_(MakemoreMLP())
        reports[name] = doctor(model, x, y, data=data, steps=steps, batches=batches, seed=seed,
                               optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))  # fmt: skip
        reports[name].model_name = f"makemore MLP, {name} init"
    return reports


def summary(reports: dict[str, Report]) -> str:
    """A side-by-side table of the headline figures, then each report."""
    rows = [("init", "initial loss", "expected", "tanh saturated", "verdict")]
    for name, r in reports.items():
        il = r.measurements["initial_loss"]
        sat = next((a.get("saturated_frac") for a in r.measurements["activations"]
                    if a.get("saturated_frac") is not None), None)  # fmt: skip
        bad = ", ".join(f"{f.check} ({f.severity})" for f in r.problems) or "healthy"
        rows.append((name, f"{il['observed']:.2f}", f"{il['expected']:.2f}",
                     "-" if sat is None else f"{sat:.1%}", bad))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    parts = ["\n".join(lines)]
    parts += [f"\n=== {name} init ===\n{r}" for name, r in reports.items()]
    return "\n".join(parts)


def main_demo(out_dir: str | Path, *, steps: int = 20, plots: bool = True,
              **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """Run the makemore demo; write ``<init>_*.png`` and ``<init>.html`` into ``out_dir``.

    Returns ``{"reports": {name: Report}, "files": [paths], "text": summary}`` (the CLI prints
    ``text``). ``plots=False`` skips the PNG and HTML files (no matplotlib needed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = makemore_reports(steps=steps, **kwargs)
    files: list[Path] = []
    for name, r in reports.items():
        (out / f"{name}.json").write_text(r.to_json(indent=1), encoding="utf-8")
        files.append(out / f"{name}.json")
        if plots:
            files += r.plot(out / f"{name}.png")
            files.append(r.save_html(out / f"{name}.html", title=f"initlab doctor: {r.model_name}"))
    return {"reports": reports, "files": files, "text": summary(reports)}
