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
            "setup": m.get("setup") or {"model": self.model_name},
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
            "verdict": self.verdict(),
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
            every = [u for u in p.get("update_to_data") or [] if u is not None]
            ups = [u for u in every if 0 < u < math.inf]
            up = f"1e{sum(math.log10(u) for u in ups) / len(ups):.2f}" if ups else "-"
            if any(not math.isfinite(u) for u in every):
                up = "NaN/inf"
            prows.append([p["name"], "x".join(map(str, p["shape"])), _num(p["data_std"]),
                          _num(p.get("planned_std")), _num(p.get("std_ratio"), ".2f"),
                          _num(p.get("grad_norm")), _num(p.get("grad_to_data")), up])  # fmt: skip
        return lh, lrows, ph, prows

    def verdict(self) -> str:
        """One line: ``healthy`` or how many checks failed and warned."""
        fails = sorted({f.check for f in self.findings if f.severity == "fail"})
        warns = sorted({f.check for f in self.findings if f.severity == "warn"} - set(fails))
        if not fails and not warns:
            return f"healthy: all {len({f.check for f in self.findings})} checks passed"
        parts = [f"{len(fails)} check(s) failed ({', '.join(fails)})"] if fails else []
        parts += [f"{len(warns)} warned ({', '.join(warns)})"] if warns else []
        return ("unhealthy: " if fails else "healthy with warnings: ") + "; ".join(parts)

    def setup_lines(self) -> list[tuple[str, str]]:
        """The run's set-up as ``(key, value)`` pairs, in display order."""
        setup = self.measurements.get("setup") or {"model": self.model_name}
        return [(str(k), str(v)) for k, v in setup.items()]

    def text(self, cli: bool = False) -> str:
        """The report as text: set-up, verdict, tables, findings with their fixes.

        ``cli``: each problem also gets the ``initlab doctor`` flags that apply its fix.
        """
        m = self.measurements
        il = m["initial_loss"]
        lines = [f"initlab doctor: {self.model_name}"]
        width = max((len(k) for k, _ in self.setup_lines()), default=0)
        lines += [f"  {k.ljust(width)}  {v}" for k, v in self.setup_lines()]
        lines += ["", f"verdict: {self.verdict()}"]
        if il.get("observed") is not None:
            exp = il.get("expected")
            extra = f" = log({il['classes']})" if il.get("classes") else ""
            se = f" +- {il['observed_se']:.2g}" if il.get("observed_se") else ""
            lines.append(
                f"initial loss {_num(il['observed'], '.4g')}{se}, expected {_num(exp, '.4g')}{extra}"
            )
        lh, lrows, ph, prows = self.tables()
        lines += ["", *_table(lh, [r[:-1] for r in lrows] if lrows else [], drop_last=True)]
        lines += ["", *_table(ph, prows)]
        if m["residual"]:
            rh, rr = self._residual_table()
            lines += ["", *_table(rh, rr)]
        if m.get("attention"):
            ah, ar = self._attention_table()
            lines += ["", *_table(ah, ar)]
        jac = m.get("jacobian") or {}
        if jac.get("mean_sq") is not None:
            lines.append(f"\nJacobian (input->output, {jac['examples']} examples): mean sigma^2 "
                         f"{_num(jac['mean_sq'])}, sigma_max {_num(jac['sigma_max'])}")  # fmt: skip
        lines.append("")
        lines.append("findings:" if self.problems else "findings: all checks passed")
        for f in self.problems:
            lines.append(f"  [{f.severity.upper()}] {f.check}: {f.message}")
            if cli and f.cli:
                lines.append(f"      fix with: {f.cli}")
        passed = sorted({f.check for f in self.findings} - {f.check for f in self.problems})
        if passed:
            lines.append(f"  ok: {', '.join(passed)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    __repr__ = __str__

    def _residual_table(self) -> tuple[list[str], list[list[str]]]:
        rh = ["block", "avg ch. sq. mean", "avg ch. var", "branch var"]
        rr = [[r["name"], _num(r.get("avg_channel_sq_mean")), _num(r.get("avg_channel_var")),
               _num(r.get("branch_var"))] for r in self.measurements["residual"]]  # fmt: skip
        return rh, rr

    def _attention_table(self) -> tuple[list[str], list[list[str]]]:
        ah = ["attention", "logit std", "entropy", "log T", "token cosine"]
        ar = [[r["name"], _num(r.get("logit_std")), _num(r.get("entropy")),
               _num(r.get("max_entropy")), _num(r.get("token_cosine"))]
              for r in self.measurements["attention"]]  # fmt: skip
        return ah, ar

    # -- plots
    def plot(self, path: str | Path) -> list[Path]:
        """Write the PNG plots; ``path`` is a folder, or a file name used as prefix.

        Returns the paths written: ``*_activations.png``, ``*_gradients.png``,
        ``*_grad_data.png`` and, after steps, ``*_update_data.png`` and ``*_loss.png``.
        Raises ``ModuleNotFoundError`` naming ``pip install initlab[plot]`` without matplotlib.
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
            ("loss", self._plot_loss),
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
            label = f"{r['name']}: mean {_num(r['mean'], '+.2f')}, std {_num(r['std'], '.2f')}"
            if r.get("saturated_frac") is not None:
                label += f", saturated {r['saturated_frac']:.1%}"
            if r.get("dead_frac"):
                label += f", dead {r['dead_frac']:.1%}"
            _line(ax, r["hist"], label)
        ax.set_title(f"{self.model_name}: activation distribution")
        ax.set_xlabel("activation value")
        ax.set_ylabel("density (fraction per unit of value)")
        _legend(ax)
        for r in pre:
            _line(
                ax2,
                r["hist"],
                f"{r['name']}: mean {_num(r['mean'], '+.2f')}, std {_num(r['std'], '.2f')}",
            )
        ax2.set_title("layer outputs (pre-activations; head left out)")
        ax2.set_xlabel("pre-activation value")
        ax2.set_ylabel("density (fraction per unit of value)")
        _legend(ax2)
        return fig

    def _plot_grads(self, plt: Any) -> Any:
        rows = [r for r in self.measurements["activations"] if r.get("grad_hist")]
        if not rows:
            return None
        fig, ax = plt.subplots(figsize=(10, 4))
        for r in rows:
            _line(ax, r["grad_hist"], f"{r['name']}: grad std {_num(r.get('grad_std'), '.2e')}")
        ax.set_title(f"{self.model_name}: gradient distribution (w.r.t. activations)")
        ax.set_xlabel("d loss / d activation")
        ax.set_ylabel("density (fraction per unit of gradient)")
        _legend(ax)
        return fig

    def _plot_grad_data(self, plt: Any) -> Any:
        rows = [p for p in self.measurements["params"]
                if p.get("grad_to_data") and p["ndim"] >= 2 and math.isfinite(p["grad_to_data"])]  # fmt: skip
        if not rows:
            return None
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        for p in rows:
            _line(ax1, p["grad_hist"], f"{p['name']} {'x'.join(map(str, p['shape']))}: "
                  f"grad:data {p['grad_to_data']:.2e}")  # fmt: skip
        ax1.set_title("weight gradient distribution")
        ax1.set_xlabel("d loss / d weight")
        ax1.set_ylabel("density (fraction per unit of gradient)")
        _legend(ax1)
        ax2.bar(range(len(rows)), [p["grad_to_data"] for p in rows], color="C0")
        ax2.set_yscale("log")
        ax2.set_xticks(range(len(rows)), [p["name"] for p in rows], rotation=60, fontsize=7,
                       ha="right")  # fmt: skip
        ax2.set_xlabel("weight")
        ax2.set_ylabel("std(grad) / std(weight), log scale", labelpad=8)
        _no_minor_labels(ax2)
        ax2.set_title("grad:data ratio per weight")
        return fig

    def _plot_updates(self, plt: Any) -> Any:
        rows = [
            p for p in self.measurements["params"] if p.get("update_to_data") and p["ndim"] >= 2
        ]
        if not rows:
            return None
        fig, ax = plt.subplots(figsize=(10, 4))
        for i, p in enumerate(rows):
            ys = [u if u is not None and math.isfinite(u) and u > 0 else float("nan")
                  for u in p["update_to_data"]]  # fmt: skip
            ax.plot(range(1, len(ys) + 1), ys, label=p["name"], color=f"C{i % 10}")
            bad = [
                k + 1
                for k, u in enumerate(p["update_to_data"])
                if u is None or not math.isfinite(u)
            ]
            if bad:  # diverged steps: marked, not dropped
                ax.plot(bad, [0.96] * len(bad), "x", color=f"C{i % 10}", ms=9, mew=2,
                        transform=ax.get_xaxis_transform(),  # at the top: no value to place
                        label=f"{p['name']}: NaN/inf at step {bad[0]}")  # fmt: skip
        ax.axhline(1e-3, color="k", ls="--", lw=1, label="1e-3 (healthy)")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("||W_after - W_before|| / ||W_before||, log scale", labelpad=8)
        _integer_steps(ax)
        _no_minor_labels(ax)
        ax.set_title(f"{self.model_name}: update:data ratio")
        _legend(ax)
        return fig

    def _plot_loss(self, plt: Any) -> Any:
        steps = self.measurements.get("steps") or []
        if not steps:
            return None
        fig, ax = plt.subplots(figsize=(10, 3.5))
        xs = [s["step"] + 1 for s in steps]
        ys = [s["loss"] if math.isfinite(s["loss"]) else float("nan") for s in steps]
        ax.plot(xs, ys, marker=".", label="training loss (one batch per step)")
        bad = [x for x, s in zip(xs, steps, strict=True) if not math.isfinite(s["loss"])]
        finite = [y for y in ys if math.isfinite(y)]
        if bad:
            top = max(finite) if finite else 1.0
            ax.plot(bad, [top] * len(bad), "x", color="C3", ms=10, mew=2,
                    label=f"diverged (NaN/inf) from step {bad[0]}")  # fmt: skip
        if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        kind = self.measurements["initial_loss"].get("kind")
        ax.set_ylabel({"classification": "loss (cross-entropy, nats)",
                       "regression": "loss (mean squared error)"}.get(kind, "loss"))  # fmt: skip
        _integer_steps(ax)
        ax.set_title(f"{self.model_name}: loss over the doctor's steps")
        _legend(ax)
        return fig

    # -- HTML
    def save_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write one self-contained page: run details, verdict, findings, tables, plots (inline
        PNG). Without matplotlib the page says how to get the plots and keeps everything else."""
        import tempfile

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        title = title or f"initlab doctor: {self.model_name}"
        images: list[tuple[str, str]] | None = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for png in self.plot(tmp):
                    images.append((png.stem, base64.b64encode(png.read_bytes()).decode("ascii")))
        except ImportError:
            images = None
        path.write_text(self.html(title, images), encoding="utf-8")
        return path

    def html(self, title: str, images: list[tuple[str, str]] | None = None) -> str:
        """The HTML page as text (``images``: ``(name, base64 PNG)`` pairs; ``None``: matplotlib
        is missing, and the page says so)."""
        esc = html.escape
        worst = "fail" if not self.ok else "warn" if self.problems else "ok"
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
                 f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
                 f"<div class='verdict {worst}'><b>Verdict:</b> {esc(self.verdict())}</div>"]  # fmt: skip
        if self.problems:
            parts.append("<ol class='top'>")
            for f in self.problems:
                fix = f" <span class='fix'>Fix: {esc(f.fix)}</span>" if f.fix else ""
                if f.cli:
                    fix += f"<br><span class='fix'>Command line: <code>{esc(f.cli)}</code></span>"
                parts.append(f"<li><span class='badge {f.severity}'>{f.severity.upper()}</span> "
                             f"<code>{esc(f.check)}</code> at <code>{esc(f.layer or 'model')}</code>."
                             f"{fix}</li>")  # fmt: skip
            parts.append("</ol>")
        parts.append("<h2>Run details</h2><table class='kv'>")
        for k, v in self.setup_lines():
            parts.append(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>")
        il = self.measurements["initial_loss"]
        if il.get("observed") is not None:
            extra = f" = log({il['classes']})" if il.get("classes") else ""
            parts.append(f"<tr><th>initial loss</th><td>{esc(_num(il['observed'], '.4g'))} "
                         f"(expected {esc(_num(il.get('expected'), '.4g'))}{esc(extra)})</td></tr>")  # fmt: skip
        parts.append("</table>")
        parts.append("<h2>Findings</h2><table class='grid findings'><thead><tr><th>severity</th>"
                     "<th>check</th><th>where</th><th>what was measured</th><th>fix (Python)</th>"
                     "<th>fix (initlab doctor flags)</th></tr></thead><tbody>")  # fmt: skip
        for f in sorted(self.findings, key=lambda f: -_ORDER[f.severity]):
            parts.append(f"<tr class='{f.severity}'><td><span class='badge {f.severity}'>"
                         f"{f.severity.upper()}</span></td><td><code>{esc(f.check)}</code></td>"
                         f"<td><code>{esc(f.layer or '-')}</code></td><td class='msg'>"
                         f"{esc(_measured(f))}</td>"
                         f"<td class='msg'>{esc(f.fix or '-')}</td>"
                         f"<td><code>{esc(f.cli or '-')}</code></td></tr>")  # fmt: skip
        parts.append("</tbody></table>")
        lh, lrows, ph, prows = self.tables()
        sections = [("Activations", lh[:-1], [r[:-1] for r in lrows]), ("Parameters", ph, prows)]
        if self.measurements["residual"]:
            sections.append(("Residual blocks", *self._residual_table()))
        if self.measurements.get("attention"):
            sections.append(("Attention", *self._attention_table()))
        for head, h, rows in sections:
            parts.append(f"<h2>{head}</h2><table class='grid'><thead><tr>"
                         + "".join(f"<th>{esc(c)}</th>" for c in h) + "</tr></thead><tbody>")  # fmt: skip
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
            parts.append("</tbody></table>")
        parts.append("<h2>Plots</h2>")
        if images is None:
            parts.append("<p class='note'>Plots left out: matplotlib is not installed "
                         "(<code>pip install initlab[plot]</code>).</p>")  # fmt: skip
        for name, b64 in images or []:
            caption = next((c for k, c in _CAPTIONS.items() if name.endswith(k)), "")
            parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")  # fmt: skip
        parts.append(f"<h2>Graph</h2><pre>{esc(str(self.measurements.get('graph', '')))}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts)


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;"
    "max-width:1200px;padding:0 1.5em;color:#222;line-height:1.45}"
    "h1{font-size:1.6em;margin-bottom:.4em}h2{font-size:1.2em;margin-top:1.6em;"
    "border-bottom:1px solid #ddd;padding-bottom:.2em}"
    ".verdict{padding:.8em 1em;border-radius:6px;font-size:1.1em;margin:1em 0}"
    ".verdict.fail{background:#fdecea;border-left:6px solid #c62828}"
    ".verdict.warn{background:#fff4e5;border-left:6px solid #e65100}"
    ".verdict.ok{background:#edf7ed;border-left:6px solid #2e7d32}"
    "ol.top li{margin:.35em 0}.fix{color:#444}.fix code{white-space:nowrap}"
    ".badge{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:.8em;"
    "font-weight:600}.badge.fail{background:#c62828}.badge.warn{background:#e65100}"
    ".badge.ok{background:#2e7d32}"
    "table{border-collapse:collapse;font-size:13px;margin:.8em 0}"
    "table.grid th{background:#37474f;color:#fff;position:sticky;top:0}"
    "table.grid td,table.grid th{border:1px solid #d0d7de;padding:4px 9px;text-align:right;"
    "font-variant-numeric:tabular-nums}"
    "table.grid td:first-child,table.grid th:first-child{text-align:left}"
    "table.grid tbody tr:nth-child(even){background:#f6f8fa}"
    "table.findings td,table.findings th{text-align:left;vertical-align:top}table.findings td.msg{max-width:420px}"
    "table.findings tr.fail td{background:#fdecea}table.findings tr.warn td{background:#fff4e5}"
    "table.kv th{text-align:left;padding:3px 14px 3px 0;color:#555;font-weight:600}"
    "table.kv td{padding:3px 0}"
    "code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}"
    "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}"
    "figcaption{color:#555;font-size:.9em}pre{background:#f5f5f5;padding:1em;overflow-x:auto}"
    ".note{background:#fff4e5;padding:.6em 1em;border-radius:4px}"
)

_CAPTIONS = {
    "activations": "Left: distribution of each activation's outputs over the batch (makemore part 3): "
    "a tanh piled up at +-1 is saturated. Right: the layers' outputs before the activation.",
    "gradients": "Distribution of the gradient of the loss with respect to each activation: "
    "similar widths across depth mean gradients neither vanish nor explode.",
    "grad_data": "Left: each weight's gradient distribution. Right: std(grad)/std(weight) per "
    "weight, log scale; a weight far above the others would move much faster at the same lr.",
    "update_data": "Per step, how far each weight moved relative to its size (log scale); ~1e-3 "
    "(dashed) is healthy. Crosses mark steps where the update was NaN/inf.",
    "loss": "The loss over the doctor's optimizer steps (on a copy); crosses mark divergence.",
}


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


def _measured(f: Finding) -> str:
    """A finding's message without its fix (shown in its own column), keeping ``[also ...]``."""
    if not f.fix:
        return f.message
    head = f.message.split("; ")[0]
    also = f.message.rfind(" [also ")
    return head + (f.message[also:] if also > len(head) else "")


def _integer_steps(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _no_minor_labels(ax: Any) -> None:
    """Log axes label only the decades: minor labels (``6x10^-2``) crowd into the axis title."""
    from matplotlib.ticker import NullFormatter

    ax.yaxis.set_minor_formatter(NullFormatter())


def _legend(ax: Any) -> None:
    """A legend below many lines stays readable: small font, outside the axes when crowded."""
    n = len(ax.get_legend_handles_labels()[0])
    if n == 0:
        return
    if n > 8:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7)


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
    except ImportError as exc:
        raise ModuleNotFoundError(
            "report.plot needs matplotlib: pip install 'initlab[plot]'"
        ) from exc
    return _Figures(Figure)
