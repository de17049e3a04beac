"""Checks: turn the doctor's measurements into findings with stable ids, severities and fixes.

Each check reads the plain measurements (dicts built by :func:`initlab.doctor`) and
returns :class:`Finding` values. The ids are stable (scripts may key on them):

==========================  ======================================================================
check id                    rule (warn / fail) and its source
==========================  ======================================================================
``initial_loss``            classification: observed - log(C) > 0.15 log(C) / > 0.5 log(C), where
                            log(C) is the loss of uniform predictions (Karpathy 2019 "A Recipe
                            for Training Neural Networks": verify loss @ init; makemore part 3:
                            expect -log(1/27) = 3.30, the naive init gives ~27). Regression (MSE):
                            observed > 2 E[y^2] / > 10 E[y^2] (outputs near 0 give E[y^2]).
``saturation``              fraction of a bounded activation's outputs with ``|t| > 0.97``
                            >= 25% / >= 50%. With pre-activations N(0, s^2) the fraction is
                            2 Phi(-atanh(0.97)/s): Kaiming's tanh gain 5/3 on unit inputs gives
                            21% (tolerated); the lecture's naive init (s ~ 5.6) gives ~70%
                            (makemore part 3: "the tanh is very very active"); its fix (W1*0.2,
                            s ~ 1.1) gives ~6%.
``dead_units``              fraction of units zero (ReLU) or saturated (tanh) for every example of
                            the batch >= 10% / >= 50% (makemore part 3: a white column is a dead
                            neuron; Lu et al. 2019 "Dying ReLU"). Needs >= 16 examples: a live
                            unit of a symmetric pre-activation is zero for all n examples with
                            probability 2^-n.
``vanishing_activations``   RMS of the last hidden activation / RMS of the first < 0.1 / < 0.01
``exploding_activations``   that ratio > 10 / > 100, or any activation RMS > 1e3 (fail). Plain
                            nets should keep the second moment constant across depth (Glorot &
                            Bengio 2010; He et al. 2015 sec. 2.2: a per-layer factor compounds,
                            e.g. 1/sqrt(3) per layer stalls a 30-layer net). Residual streams
                            grow ~sqrt(depth) by design, within these bounds for <= 100 blocks.
``vanishing_gradients``     RMS of the gradient w.r.t. the first hidden activation / the last
                            < 0.1 / < 0.01 (same sources, backward pass);
``exploding_gradients``     > 10 / > 100.
``update_ratio``            per weight, the mean over steps of log10(||dW|| / ||W||) of the true
                            update outside [-4, -2] / [-5, -1] (makemore part 3: ~-3 is healthy).
                            A head whose std is under half the plan's (shrunk on purpose, as the
                            lecture's W2*0.01) may update faster: the lecture shows it as the
                            expected outlier of the first steps.
``isometry``                (warn only) the input-output Jacobian's sigma_max^2 / mean sigma^2
                            > 50, or mean sigma^2 outside [1e-4, 1e4] (Pennington et al. 2017:
                            dynamical isometry wants all singular values near 1).
``nonfinite``               any NaN/inf in the inputs, the targets, the weights, the loss, an
                            activation or a gradient, or during the doctor's optimizer steps:
                            fail (the fix depends on which came first).
==========================  ======================================================================

Findings are raised on the mean over batches; when several batches were measured, a ``warn``
whose confidence band (mean +- 2 standard errors) reaches back across the threshold is
downgraded to ``ok`` (the figure is not distinguishable from noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["CHECKS", "THRESHOLDS", "Finding", "run_checks"]

Severity = Literal["ok", "warn", "fail"]

CHECKS = (
    "initial_loss", "saturation", "dead_units", "vanishing_activations", "exploding_activations",
    "vanishing_gradients", "exploding_gradients", "update_ratio", "isometry", "nonfinite",
)  # fmt: skip

#: (warn, fail) thresholds of each check; see the module docstring for their sources
THRESHOLDS: dict[str, tuple[float, float]] = {
    "initial_loss": (0.15, 0.5),  # excess over log(C), relative to log(C)
    "initial_loss_mse": (2.0, 10.0),  # observed / E[y^2]
    "saturation": (0.25, 0.5),
    "dead_units": (0.10, 0.5),
    "vanishing_activations": (0.1, 0.01),
    "exploding_activations": (10.0, 100.0),
    "vanishing_gradients": (0.1, 0.01),
    "exploding_gradients": (10.0, 100.0),
    "update_ratio_low": (-4.0, -5.0),
    "update_ratio_high": (-2.0, -1.0),
    "isometry_spread": (50.0, math.inf),
}

MIN_DEAD_BATCH = 16

#: mean cosine between examples above which a layer's inputs count as collapsed
COLLAPSE_COSINE = 0.9


@dataclass(frozen=True)
class Finding:
    """One verdict.

    Attributes:
        check: a stable id from :data:`CHECKS`.
        severity: ``"ok"``, ``"warn"`` or ``"fail"``.
        message: what was measured, where, against which threshold, and the fix.
        layer: the layer or parameter concerned (``None`` for the whole model).
        value: the measured figure; ``threshold``: the one crossed (or the nearest).
        fix: the concrete initlab fix in Python, also part of ``message``.
        cli: the same fix as ``initlab doctor`` flags (``"--scheme xavier_normal"``), or what
            to change outside initlab (the data); empty when there is nothing to fix.
    """

    check: str
    severity: Severity
    message: str
    layer: str | None = None
    value: float | None = None
    threshold: float | None = None
    fix: str = ""
    cli: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        d = asdict(self)
        for k in ("value", "threshold"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


def _grade(value: float, warn: float, fail: float, low: bool = False) -> Severity:
    """``low``: bad when small (value < warn); else bad when large."""
    if low:
        return "fail" if value < fail else "warn" if value < warn else "ok"
    return "fail" if value > fail else "warn" if value > warn else "ok"


def _soften(sev: Severity, mean: float, se: float | None, threshold: float, low: bool) -> Severity:
    """Downgrade a warn whose 2-standard-error band reaches across the threshold."""
    if sev != "warn" or not se:
        return sev
    reach = mean + 2 * se if low else mean - 2 * se
    return "ok" if (reach >= threshold if low else reach <= threshold) else sev


def run_checks(m: dict[str, Any]) -> list[Finding]:
    """All findings for the measurements ``m`` (see :func:`initlab.doctor`)."""
    out: list[Finding] = []
    for check in (_nonfinite, _initial_loss, _saturation, _dead_units, _activations, _gradients,
                  _update_ratio, _isometry):  # fmt: skip
        out.extend(_worst(check(m)))
    return out


def _worst(found: list[Finding]) -> list[Finding]:
    """One finding per check id: the worst layer, with the others that share its problem."""
    ids = list(dict.fromkeys(f.check for f in found))
    if len(ids) > 1:
        return [g for i in ids for g in _worst([f for f in found if f.check == i])]
    if len(found) <= 1:
        return found
    rank = {"ok": 0, "warn": 1, "fail": 2}
    worst = max(found, key=lambda f: (rank[f.severity], f.value if f.value is not None else 0))
    bad = [f for f in found if f.severity != "ok"]
    if len(bad) > 1:
        others = ", ".join(f.layer or "?" for f in bad if f is not worst)
        more = f" [also {len(bad) - 1} more: {others[:200]}{'...' if len(others) > 200 else ''}]"
        worst = Finding(worst.check, worst.severity, worst.message + more, worst.layer, worst.value,
                        worst.threshold, worst.fix, worst.cli)  # fmt: skip
    return [worst]


# --------------------------------------------------------------------------- the checks


def _nonfinite(m: dict[str, Any]) -> list[Finding]:
    """NaN/inf, blamed on the first thing that holds them: inputs, targets, weights, then the
    forward/backward pass (the loss, activations, gradients)."""
    inputs, targets = m.get("inputs_nonfinite") or 0, m.get("targets_nonfinite") or 0
    weights = [p["name"] for p in m["params"] if p.get("nonfinite")]
    bad = [(r["name"], what) for r in m["activations"] + m["layer_outputs"]
           for what in ("out", "grad") if r.get(f"{what}_nonfinite")]  # fmt: skip
    bad += [(p["name"], "grad") for p in m["params"] if p.get("grad_nonfinite")]
    loss = m["initial_loss"]["observed"]
    if loss is not None and not math.isfinite(loss):
        bad.insert(0, ("loss", "value"))
    if inputs or targets:
        what = " and ".join(f"the {k} hold {n} NaN/inf values" for k, n in
                            (("inputs", inputs), ("targets", targets)) if n)  # fmt: skip
        fix = ("the data is broken, not the init: clean it before training (drop or repair "
               "those rows; torch.isfinite(x).all() should hold)")  # fmt: skip
        where = "inputs" if inputs else "targets"
        return [Finding("nonfinite", "fail", f"{what}; {fix}", where, float(inputs + targets), 0.0,
                        fix, "check the data set (--data): it holds NaN/inf")]  # fmt: skip
    if weights:
        shown = ", ".join(weights[:3]) + (
            f" and {len(weights) - 3} more" if len(weights) > 3 else ""
        )
        fix = "re-initialize: initlab.init(model, example=x) draws every weight afresh"
        return [Finding("nonfinite", "fail", f"the weights hold NaN/inf before any step ({shown}); "
                        f"{fix}", weights[0], float(len(weights)), 0.0, fix,
                        "--scheme kaiming_normal")]  # fmt: skip
    if not bad:
        return _diverged_steps(m) or [
            Finding("nonfinite", "ok",
                    "no NaN or inf in the data, weights, loss, activations or gradients")]  # fmt: skip
    where, what = bad[0]
    fix = ("re-initialize with initlab.init(model, example=...) (a scheme with the right gain); "
           "check the loss for log(0)")  # fmt: skip
    return [Finding("nonfinite", "fail", f"NaN/inf first in {where} ({what}), {len(bad)} places "
                    f"in all; {fix}", where, float(len(bad)), 0.0, fix, "--scheme kaiming_normal")]  # fmt: skip


def _diverged_steps(m: dict[str, Any]) -> list[Finding]:
    """The doctor's own optimizer steps (on a copy) ran into NaN/inf: the learning rate (or the
    init's scale) is too large for this optimizer."""
    steps = m.get("steps") or []
    bad_loss = [s["step"] for s in steps if not math.isfinite(s["loss"])]
    bad_update = [k for p in m["params"] for k, u in enumerate(p.get("update_to_data") or [])
                  if u is not None and not math.isfinite(u)]  # fmt: skip
    first = min(bad_loss + bad_update, default=None)
    if first is None:
        return []
    lr = m.get("lr")
    fix = (f"lower the learning rate{f' (now {lr:g}; try {lr / 10:g})' if lr else ''} or the "
           "init's scale (initlab.init(model, example=x))")  # fmt: skip
    msg = (f"training diverged: NaN/inf at optimizer step {first + 1} of {len(steps)} "
           f"(the doctor's steps, on a copy); {fix}")  # fmt: skip
    return [Finding("nonfinite", "fail", msg, "steps", float(first + 1), 0.0, fix,
                    f"--lr {lr / 10:g}" if lr else "a lower --lr")]  # fmt: skip


def _head_flags(m: dict[str, Any]) -> str:
    """The flags that shrink the head, keeping the scheme already examined (the plan's)."""
    return f"--scheme {m.get('plan_scheme') or 'kaiming_normal'} --head-scale 0.01"


def _initial_loss(m: dict[str, Any]) -> list[Finding]:
    il = m["initial_loss"]
    obs, exp, kind = il["observed"], il["expected"], il["kind"]
    if obs is None or exp is None or not math.isfinite(obs):
        return []
    se = il.get("observed_se")
    if kind == "classification":
        warn, fail = THRESHOLDS["initial_loss"]
        excess = (obs - exp) / exp if exp > 0 else 0.0
        sev = _soften(_grade(excess, warn, fail), excess, se / exp if se and exp else None, warn,
                      False)  # fmt: skip
        head = m.get("head") or "head"
        fix = (
            "shrink the head: initlab.init(model, example=x, head_scale=0.01) or "
            "rules={'head': ('normal', {'std': 0.01})}, bias 0 (makemore: W2*0.01, b2*0)"
        )
        if sev == "ok":
            msg = f"initial loss {obs:.3g}, expected {exp:.3g} = log({il['classes']}) (uniform)"
            return [Finding("initial_loss", "ok", msg, head, obs, exp)]
        msg = (f"head logits too large: initial loss {obs:.3g}, expected {exp:.3g} = "
               f"log({il['classes']}) (excess {excess:.0%} > {warn if sev == 'warn' else fail:.0%}); "
               f"{fix}")  # fmt: skip
        return [Finding("initial_loss", sev, msg, head, obs, exp, fix,
                        _head_flags(m))]  # fmt: skip
    warn, fail = THRESHOLDS["initial_loss_mse"]
    ratio = obs / exp if exp > 0 else math.inf
    sev = _grade(ratio, warn, fail)
    fix = "shrink the head (initlab.init(model, example=x, head_scale=0.01)) and zero its bias"
    msg = (f"initial MSE {obs:.3g} vs E[y^2] {exp:.3g} (target variance {il.get('target_var', 0):.3g}); "
           f"ratio {ratio:.3g}")  # fmt: skip
    if sev != "ok":
        msg = f"outputs too large: {msg} > {warn if sev == 'warn' else fail}; {fix}"
    return [Finding("initial_loss", sev, msg, m.get("head"), obs, exp, fix if sev != "ok" else "",
                    _head_flags(m) if sev != "ok" else "")]  # fmt: skip


def _acts(m: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in m["activations"] if r.get("act")]


def _saturation(m: dict[str, Any]) -> list[Finding]:
    warn, fail = THRESHOLDS["saturation"]
    out = []
    for r in _acts(m):
        sat = r.get("saturated_frac")
        if sat is None:
            continue
        sev = _soften(_grade(sat, warn, fail), sat, r.get("saturated_frac_se"), warn, False)
        layer = r.get("after") or r["name"]
        fix = (f"shrink the layer feeding it: initlab.init(model, 'xavier_normal', example=x) or "
               f"rules={{'{layer}.weight': 'kaiming_normal'}} (gain 5/3 for tanh; makemore: "
               f"W1*0.2, b1*0.01), or add a norm layer before the {r['act']}")  # fmt: skip
        msg = f"{r['name']}: {sat:.0%} of {r['act']} outputs saturated (|t| > 0.97)"
        if sev != "ok":
            msg += (
                f" >= {warn if sev == 'warn' else fail:.0%}: the gradient through them is "
                f"< 6% of its value; pre-activation std {r.get('pre_std', float('nan')):.3g}; {fix}"
            )
        out.append(
            Finding(
                "saturation",
                sev,
                msg,
                r["name"],
                sat,
                warn,
                fix if sev != "ok" else "",
                "--scheme xavier_normal" if sev != "ok" else "",
            )
        )
    return out


def _dead_units(m: dict[str, Any]) -> list[Finding]:
    warn, fail = THRESHOLDS["dead_units"]
    if m.get("batch_size", 0) < MIN_DEAD_BATCH:
        return []
    out = []
    for r in _acts(m):
        dead = r.get("dead_frac")
        if dead is None:
            continue
        sev = _grade(dead, warn, fail)
        layer = r.get("after") or r["name"]
        what = (
            "zero"
            if r["act"] not in ("tanh", "sigmoid", "hardtanh", "softsign", "hardsigmoid")
            else "saturated"
        )
        cos = r.get("pre_cosine")
        if cos is not None and cos > COLLAPSE_COSINE:
            fix = (
                f"the examples reaching {layer} are nearly collinear (mean cosine {cos:.2f} > "
                f"{COLLAPSE_COSINE}): deep plain stacks collapse correlations (Schoenholz et "
                "al. 2017); add normalization or residual connections, or use orthogonal "
                "init (initlab.init(model, 'orthogonal', example=x)); if biases dominate the signal, zero them"
            )
        else:
            fix = (
                f"rules={{'{layer}.bias': 'zeros'}} and a fan-in scheme (initlab.init(model, "
                f"'kaiming_normal', example=x)); for ReLU consider leaky_relu"
            )
        msg = f"{r['name']}: {dead:.0%} of {r.get('units')} units {what} for every example"
        if sev != "ok":
            msg += f" >= {warn if sev == 'warn' else fail:.0%}; {fix}"
        out.append(
            Finding(
                "dead_units",
                sev,
                msg,
                r["name"],
                dead,
                warn,
                fix if sev != "ok" else "",
                ""
                if sev == "ok"
                else "--scheme orthogonal"
                if "orthogonal" in fix
                else "--scheme kaiming_normal",
            )
        )
    return out


def _hidden(m: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in _acts(m) if r.get(key) is not None and math.isfinite(r[key]) and r[key] > 0]


def _deviating(m: dict[str, Any], low: bool) -> str:
    """Weights whose std is off the plan by more than 1.5x in the given direction."""
    names = [p["name"] for p in m["params"] if p.get("std_ratio") is not None
             and (p["std_ratio"] < 1 / 1.5 if low else p["std_ratio"] > 1.5)
             and p.get("role") not in ("head", "bias")]  # fmt: skip
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" (weight std off the plan ({m.get('plan_scheme')}) by > 1.5x: {shown})"


def _activations(m: dict[str, Any]) -> list[Finding]:
    rows = _hidden(m, "rms")
    if len(rows) < 2:
        return []
    first, last = rows[0], rows[-1]
    ratio = last["rms"] / first["rms"]
    fix = (
        f"initlab.init(model, '{m.get('suggest_scheme', 'kaiming_normal')}', example=x) "
        "(gain from each layer's activation), or initlab.lsuv"
    )
    cli = f"--scheme {m.get('suggest_scheme', 'kaiming_normal')}"
    out = []
    vw, vf = THRESHOLDS["vanishing_activations"]
    sev = _grade(ratio, vw, vf, low=True)
    span = f"{first['name']} -> {last['name']} ({len(rows)} activations)"
    msg = f"activation RMS {first['rms']:.3g} -> {last['rms']:.3g} over {span}: ratio {ratio:.3g}"
    if sev != "ok":
        out.append(Finding("vanishing_activations", sev,
                           f"signal vanishes: {msg} < {vw if sev == 'warn' else vf}"
                           f"{_deviating(m, True)}; {fix}", last["name"], ratio, vw, fix, cli))  # fmt: skip
    else:
        out.append(Finding("vanishing_activations", "ok", msg, last["name"], ratio, vw))
    ew, ef = THRESHOLDS["exploding_activations"]
    big = max(rows, key=lambda r: r["rms"])
    sev = _grade(ratio, ew, ef)
    if big["rms"] > 1e3:
        sev = "fail"
    if sev != "ok":
        out.append(Finding("exploding_activations", sev,
                           f"signal explodes: {msg} > {ew if sev == 'warn' else ef} (max RMS "
                           f"{big['rms']:.3g} at {big['name']}){_deviating(m, False)}; {fix}",
                           big["name"], ratio, ew, fix, cli))  # fmt: skip
    else:
        out.append(Finding("exploding_activations", "ok", msg, big["name"], ratio, ew))
    return out


def _gradients(m: dict[str, Any]) -> list[Finding]:
    rows = _hidden(m, "grad_rms")
    if len(rows) < 2:
        return []
    first, last = rows[0], rows[-1]
    ratio = first["grad_rms"] / last["grad_rms"]
    fix = (
        f"initlab.init(model, '{m.get('suggest_scheme', 'kaiming_normal')}', example=x); "
        "for deep plain nets also orthogonal (Saxe et al. 2014) or residual connections"
    )
    cli = f"--scheme {m.get('suggest_scheme', 'kaiming_normal')}"
    msg = (
        f"gradient RMS w.r.t. activations {last['grad_rms']:.3g} at {last['name']} -> "
        f"{first['grad_rms']:.3g} at {first['name']}: ratio {ratio:.3g}"
    )
    vw, vf = THRESHOLDS["vanishing_gradients"]
    ew, ef = THRESHOLDS["exploding_gradients"]
    out = []
    sev = _grade(ratio, vw, vf, low=True)
    if sev != "ok":
        out.append(Finding("vanishing_gradients", sev, f"gradients vanish: {msg} < "
                           f"{vw if sev == 'warn' else vf}{_deviating(m, True)}; {fix}",
                           first["name"], ratio, vw, fix, cli))  # fmt: skip
    else:
        out.append(Finding("vanishing_gradients", "ok", msg, first["name"], ratio, vw))
    sev = _grade(ratio, ew, ef)
    if sev != "ok":
        out.append(Finding("exploding_gradients", sev, f"gradients explode: {msg} > "
                           f"{ew if sev == 'warn' else ef}{_deviating(m, False)}; {fix}",
                           first["name"], ratio, ew, fix, cli))  # fmt: skip
    else:
        out.append(Finding("exploding_gradients", "ok", msg, first["name"], ratio, ew))
    return out


def _update_ratio(m: dict[str, Any]) -> list[Finding]:
    out = []
    lw, lf = THRESHOLDS["update_ratio_low"]
    hw, hf = THRESHOLDS["update_ratio_high"]
    for p in m["params"]:
        ups = [u for u in p.get("update_to_data") or [] if u is not None and 0 < u < math.inf]
        if not ups or p.get("role") in ("bias", "norm") or p.get("ndim", 2) < 2:
            continue
        logr = sum(math.log10(u) for u in ups) / len(ups)
        sev_low = _grade(logr, lw, lf, low=True)
        sev_high = _grade(logr, hw, hf)
        sev: Severity = "fail" if "fail" in (sev_low, sev_high) else \
            "warn" if "warn" in (sev_low, sev_high) else "ok"  # fmt: skip
        msg = f"{p['name']}: update:data 10^{logr:.2f} per step (healthy ~10^-3)"
        fix = cli = ""
        lr = m.get("lr")
        if sev_high != "ok":
            fix = (f"lower the learning rate{f' (now {lr:g}; try {lr / 10:g})' if lr else ''}, or "
                   "check that the weight is not initialized too small")  # fmt: skip
            cli = f"--lr {lr / 10:g}" if lr else "a lower --lr"
            if p.get("role") == "head" and (p.get("std_ratio") or 1.0) < 0.5:
                # makemore part 3: a head shrunk on purpose (W2*0.01) moves fast at first
                msg += " (expected: the head was shrunk on purpose and grows in the first steps)"
                sev, fix, cli = "ok", "", ""
        elif sev_low != "ok":
            fix = (f"raise the learning rate{f' (now {lr:g}; try {lr * 10:g})' if lr else ''}, or "
                   "check that the weight is not initialized too large")  # fmt: skip
            cli = f"--lr {lr * 10:g}" if lr else "a higher --lr"
        if sev != "ok":
            msg += f" outside [{lw:g}, {hw:g}]; {fix}"
        out.append(Finding("update_ratio", sev, msg, p["name"], logr,
                           hw if sev_high != "ok" else lw, fix, cli))  # fmt: skip
    return out


def _isometry(m: dict[str, Any]) -> list[Finding]:
    jac = m.get("jacobian")
    if not jac or jac.get("mean_sq") is None:
        return []
    mean_sq, spread = jac["mean_sq"], jac.get("spread")
    if not math.isfinite(mean_sq) or (spread is not None and not math.isfinite(spread)):
        return []  # NaN/inf through the Jacobian: the nonfinite check says where
    warn, _ = THRESHOLDS["isometry_spread"]
    msg = (
        f"input-output Jacobian: mean sigma^2 {mean_sq:.3g}, sigma_max {jac['sigma_max']:.3g}, "
        f"sigma_max^2/mean sigma^2 {'n/a' if spread is None else format(spread, '.3g')}"
    )
    fix = (
        "orthogonal weights (initlab.init(model, 'orthogonal', example=x); Saxe et al. 2014, "
        "Pennington et al. 2017) with a gain on the edge of chaos"
    )
    bad = (spread is not None and spread > warn) or not (1e-4 <= mean_sq <= 1e4)
    if bad:
        note = " (a head shrunk on purpose scales all sigma down; judge the spread)"
        return [Finding("isometry", "warn", f"far from isometry: {msg} (> {warn:g}, or mean "
                        f"outside [1e-4, 1e4]){note}; {fix}", None, spread, warn, fix,
                        "--scheme orthogonal")]  # fmt: skip
    return [Finding("isometry", "ok", msg, None, spread, warn)]
