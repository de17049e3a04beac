"""The doctor's report: a table for the terminal, JSON, PNG plots and one self-contained HTML page.

The plots follow makemore part 3 (Karpathy 2022): one histogram line per activation layer (with
its mean, std and saturation in the legend), the same for the gradients w.r.t. the activations,
grad:data per weight, and log10 update:data over the steps with the 1e-3 guide. matplotlib is
imported lazily; figures are ``matplotlib.figure.Figure`` objects saved
with the Agg canvas, so pyplot's global backend is never touched (``pip install initlab[plot]``).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from .checks import Finding
from .probes import _f

__all__ = ["Report"]

_ORDER = {"fail": 2, "warn": 1, "ok": 0}


def _num(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, fmt)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return _f(x)
    if isinstance(x, (int, str, bool)) or x is None:
        return x
    return str(x)


class Report:
    """What :func:`initlab.doctor` found.

    Attributes:
        measurements: the raw figures (a dict; see :meth:`to_dict`).
        findings: the :class:`~initlab.diagnosis.checks.Finding` values, one or more per check.
    """

    def __init__(self, measurements: dict[str, Any], findings: list[Finding],
                 model_name: str = "model") -> None:  # fmt: skip
        self.measurements = measurements
        self.findings = findings
        self.model_name = model_name

    # -- queries
    @property
    def ok(self) -> bool:
        """No finding is ``fail``."""
        return all(f.severity != "fail" for f in self.findings)

    def severity(self, check: str) -> str:
        """The worst severity of ``check`` (``"ok"`` when it did not apply)."""
        return max((f.severity for f in self.findings if f.check == check), key=_ORDER.get,
                   default="ok")  # fmt: skip

    def finding(self, check: str) -> Finding | None:
        """The worst finding of ``check``, or ``None`` when the check did not apply."""
        found = [f for f in self.findings if f.check == check]
        return max(found, key=lambda f: _ORDER[f.severity]) if found else None

    @property
    def problems(self) -> list[Finding]:
        """Findings that are ``warn`` or ``fail``, worst first."""
        bad = [f for f in self.findings if f.severity != "ok"]
        return sorted(bad, key=lambda f: -_ORDER[f.severity])

    # -- JSON
    def to_dict(self, histograms: bool = False) -> dict[str, Any]:
        """JSON-safe summary: ``initial_loss``, ``layers``, ``activations``, ``params``,
        ``residual``, ``jacobian``, ``steps`` and ``findings`` (histograms only when asked)."""
        m = self.measurements
        drop = set() if histograms else {"hist", "grad_hist"}

        def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in r.items() if k not in drop} for r in rows]

        il = m["initial_loss"]
        d = {
            "model": self.model_name,
            "ok": self.ok,
            "initial_loss": {k: il.get(k) for k in ("observed", "expected", "kind", "classes",
                                                    "label_entropy", "observed_se", "target_var")
                             if k in il},
            "batches": m.get("batches", 1),
            "batch_size": m.get("batch_size"),
            "layers": m["layers"],
            "activations": clean(m["activations"]),
            "params": clean(m["params"]),
            "residual": clean(m["residual"]),
            "attention": m.get("attention", []),
            "jacobian": m.get("jacobian"),
            "steps": m.get("steps", []),
            "graph": m.get("graph"),
            "findings": [f.to_dict() for f in self.findings],
        }  # fmt: skip
        return _jsonable(d)

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    # -- text
    def tables(self) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
        """The layer table and the parameter table as (header, rows) pairs."""
        m = self.measurements
        lh = ["layer", "act", "pre std", "act mean", "act std", "saturated", "dead",
              "grad rms", "calls"]  # fmt: skip
        lrows = []
        for r in m["activations"]:
            lrows.append([r["name"], r.get("act") or "-", _num(r.get("pre_std")), _num(r["mean"], "+.3f"),
                          _num(r["std"]), _pct(r.get("saturated_frac")), _pct(r.get("dead_frac")),
                          _num(r.get("grad_rms")), ""])  # fmt: skip
        if not lrows:  # no activation at all: show the layer outputs
            for r in m["layer_outputs"]:
                lrows.append([r["name"], "-", _num(r["std"]), _num(r["mean"], "+.3f"), _num(r["std"]),
                              "-", "-", "-", ""])  # fmt: skip
        ph = ["parameter", "shape", "std", "planned", "std/plan", "grad norm", "grad:data",
              "update:data"]  # fmt: skip
        prows = []
        for p in m["params"]:
            ups = [u for u in p.get("update_to_data") or [] if u]
            up = f"1e{sum(math.log10(u) for u in ups) / len(ups):.2f}" if ups else "-"
            prows.append([p["name"], "x".join(map(str, p["shape"])), _num(p["data_std"]),
                          _num(p.get("planned_std")), _num(p.get("std_ratio"), ".2f"),
                          _num(p.get("grad_norm")), _num(p.get("grad_to_data")), up])  # fmt: skip
        return lh, lrows, ph, prows

    def __str__(self) -> str:
        m = self.measurements
        il = m["initial_loss"]
        lines = [f"initlab doctor: {self.model_name} ({m.get('batches', 1)} batch(es) of "
                 f"{m.get('batch_size')}, {len(m.get('steps') or [])} step(s))"]  # fmt: skip
        if il.get("observed") is not None:
            exp = il.get("expected")
            extra = f" = log({il['classes']})" if il.get("classes") else ""
            se = f" +- {il['observed_se']:.2g}" if il.get("observed_se") else ""
            lines.append(
                f"initial loss {il['observed']:.4g}{se}, expected {_num(exp, '.4g')}{extra}"
            )
        lh, lrows, ph, prows = self.tables()
        lines += ["", *_table(lh, [r[:-1] for r in lrows] if lrows else [], drop_last=True)]
        lines += ["", *_table(ph, prows)]
        if m["residual"]:
            rh = ["block", "avg ch. sq. mean", "avg ch. var", "branch var"]
            rr = [[r["name"], _num(r.get("avg_channel_sq_mean")), _num(r.get("avg_channel_var")),
                   _num(r.get("branch_var"))] for r in m["residual"]]  # fmt: skip
            lines += ["", *_table(rh, rr)]
        if m.get("attention"):
            ah = ["attention", "logit std", "entropy", "log T", "token cosine"]
            ar = [
                [
                    r["name"],
                    _num(r.get("logit_std")),
                    _num(r.get("entropy")),
                    _num(r.get("max_entropy")),
                    _num(r.get("token_cosine")),
                ]
                for r in m["attention"]
            ]
            lines += ["", *_table(ah, ar)]
        jac = m.get("jacobian") or {}
        if jac.get("mean_sq") is not None:
            lines.append(f"\nJacobian (input->output, {jac['examples']} examples): mean sigma^2 "
                         f"{jac['mean_sq']:.3g}, sigma_max {jac['sigma_max']:.3g}")  # fmt: skip
        lines.append("")
        lines.append("findings:" if self.problems else "findings: all checks passed")
        for f in self.problems:
            lines.append(f"  [{f.severity.upper()}] {f.check}: {f.message}")
        passed = sorted({f.check for f in self.findings} - {f.check for f in self.problems})
        if passed:
            lines.append(f"  ok: {', '.join(passed)}")
        return "\n".join(lines)

    __repr__ = __str__

    # -- plots
    def plot(self, path: str | Path) -> list[Path]:
        """Write the PNG plots; ``path`` is a folder, or a file name used as prefix.

        Returns the paths written: ``*_activations.png``, ``*_gradients.png``,
        ``*_grad_data.png`` and, after steps, ``*_update_data.png``.
        """
        plt = _pyplot()
        path = Path(path)
        if path.suffix.lower() == ".png":
            folder, stem = path.parent, path.stem
        else:
            folder, stem = path, "doctor"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, draw in (
            ("activations", self._plot_acts),
            ("gradients", self._plot_grads),
            ("grad_data", self._plot_grad_data),
            ("update_data", self._plot_updates),
        ):
            fig = draw(plt)
            if fig is None:
                continue
            out = folder / f"{stem}_{name}.png"
            fig.savefig(out, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(out)
        return written

    def _hist_rows(self) -> list[dict[str, Any]]:
        rows = [r for r in self.measurements["activations"] if r.get("hist")]
        return rows or [r for r in self.measurements["layer_outputs"] if r.get("hist")]

    def _plot_acts(self, plt: Any) -> Any:
        rows = self._hist_rows()
        if not rows:
            return None
        head = self.measurements.get("head")
        pre = [r for r in self.measurements["layer_outputs"]
               if r.get("hist") and r["name"].split("#")[0] != head]  # fmt: skip
        fig, axes = plt.subplots(1, 2, figsize=(14, 4))
        ax, ax2 = axes
        for r in rows:
            _line(
                ax,
                r["hist"],
                f"{r['name']}: mean {r['mean']:+.2f}, std {r['std']:.2f}"
                + (
                    f", saturated {r['saturated_frac']:.1%}"
                    if r.get("saturated_frac") is not None
                    else ""
                )
                + (f", dead {r['dead_frac']:.1%}" if r.get("dead_frac") else ""),
            )
        ax.set_title(f"{self.model_name}: activation distribution")
        ax.legend(fontsize=7)
        for r in pre:
            _line(ax2, r["hist"], f"{r['name']}: mean {r['mean']:+.2f}, std {r['std']:.2f}")
        ax2.set_title("layer outputs (pre-activations; head left out)")
        ax2.legend(fontsize=7)
        return fig

    def _plot_grads(self, plt: Any) -> Any:
        rows = [r for r in self.measurements["activations"] if r.get("grad_hist")]
        if not rows:
            return None
        fig, ax = plt.subplots(figsize=(10, 4))
        for r in rows:
            _line(ax, r["grad_hist"], f"{r['name']}: grad std {r['grad_std']:.2e}")
        ax.set_title(f"{self.model_name}: gradient distribution (w.r.t. activations)")
        ax.legend(fontsize=7)
        return fig

    def _plot_grad_data(self, plt: Any) -> Any:
        rows = [p for p in self.measurements["params"] if p.get("grad_to_data") and p["ndim"] >= 2]
        if not rows:
            return None
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        for p in rows:
            _line(ax1, p["grad_hist"], f"{p['name']} {'x'.join(map(str, p['shape']))}: "
                  f"grad:data {p['grad_to_data']:.2e}")  # fmt: skip
        ax1.set_title("weight gradient distribution")
        ax1.legend(fontsize=7)
        ax2.bar(range(len(rows)), [math.log10(p["grad_to_data"]) for p in rows], color="C0")
        ax2.set_xticks(range(len(rows)), [p["name"] for p in rows], rotation=60, fontsize=7,
                       ha="right")  # fmt: skip
        ax2.set_ylabel("log10 std(grad) / std(weight)")
        ax2.set_title("grad:data ratio per weight")
        return fig

    def _plot_updates(self, plt: Any) -> Any:
        rows = [
            p for p in self.measurements["params"] if p.get("update_to_data") and p["ndim"] >= 2
        ]
        if not rows:
            return None
        fig, ax = plt.subplots(figsize=(10, 4))
        for p in rows:
            ys = [math.log10(u) if u else float("nan") for u in p["update_to_data"]]
            ax.plot(range(len(ys)), ys, label=p["name"])
        ax.axhline(-3, color="k", ls="--", lw=1, label="1e-3 (healthy)")
        ax.set_xlabel("step")
        ax.set_ylabel("log10 ||update|| / ||W||")
        ax.set_title(f"{self.model_name}: update:data ratio")
        ax.legend(fontsize=7)
        return fig

    # -- HTML
    def save_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write one self-contained page: the findings, tables and plots (PNG as base64)."""
        import tempfile

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        title = title or f"initlab doctor: {self.model_name}"
        images = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for png in self.plot(tmp):
                    images.append((png.stem, base64.b64encode(png.read_bytes()).decode("ascii")))
        except ModuleNotFoundError:
            images = []
        path.write_text(self.html(title, images), encoding="utf-8")
        return path

    def html(self, title: str, images: list[tuple[str, str]] | None = None) -> str:
        """The HTML page as text (``images``: ``(name, base64 PNG)`` pairs)."""
        esc = html.escape
        colors = {"fail": "#c62828", "warn": "#ef6c00", "ok": "#2e7d32"}
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
                 "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
                 "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                 "td:first-child,th:first-child{text-align:left}"
                 "li{margin:.3em 0}pre{background:#f5f5f5;padding:1em}</style></head><body>",
                 f"<h1>{esc(title)}</h1>"]  # fmt: skip
        il = self.measurements["initial_loss"]
        if il.get("observed") is not None:
            parts.append(f"<p>Initial loss <b>{il['observed']:.4g}</b>, expected "
                         f"<b>{_num(il.get('expected'), '.4g')}</b></p>")  # fmt: skip
        parts.append("<h2>Findings</h2><ul>")
        for f in sorted(self.findings, key=lambda f: -_ORDER[f.severity]):
            parts.append(f"<li><b style='color:{colors[f.severity]}'>{f.severity.upper()}</b> "
                         f"<code>{esc(f.check)}</code>: {esc(f.message)}</li>")  # fmt: skip
        parts.append("</ul>")
        lh, lrows, ph, prows = self.tables()
        for head, (h, rows) in (
            ("Activations", (lh[:-1], [r[:-1] for r in lrows])),
            ("Parameters", (ph, prows)),
        ):
            parts.append(
                f"<h2>{head}</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in h) + "</tr>"
            )
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
            parts.append("</table>")
        for name, b64 in images or []:
            parts.append(f"<h3>{esc(name)}</h3><img alt='{esc(name)}' "
                         f"src='data:image/png;base64,{b64}' style='max-width:100%'>")  # fmt: skip
        parts.append(f"<h2>Graph</h2><pre>{esc(str(self.measurements.get('graph', '')))}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts)


def _table(header: list[str], rows: list[list[str]], drop_last: bool = False) -> list[str]:
    if drop_last:
        header = header[:-1]
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in allrows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _line(ax: Any, hist: Any, label: str) -> None:
    counts, lo, hi = hist
    if not counts:
        return
    n = len(counts)
    step = (hi - lo) / n
    centers = [lo + step * (i + 0.5) for i in range(n)]
    total = sum(counts) or 1.0
    ax.plot(centers, [c / total / step for c in counts], label=label)


class _Figures:
    """``subplots``/``close`` on :class:`matplotlib.figure.Figure`: no pyplot, no global backend."""

    def __init__(self, figure_cls: Any) -> None:
        self.figure_cls = figure_cls

    def subplots(self, *args: Any, figsize: tuple[float, float] = (10, 4)) -> tuple[Any, Any]:
        fig = self.figure_cls(figsize=figsize)
        return fig, fig.subplots(*args)

    def close(self, fig: Any) -> None:
        fig.clear()


def _pyplot() -> _Figures:
    """matplotlib's ``Figure`` (drawn by Agg when saved); pyplot and its backend are untouched."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "report.plot needs matplotlib: pip install 'initlab[plot]'"
        ) from exc
    return _Figures(Figure)
