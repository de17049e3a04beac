"""Statistical checks with tolerances derived from the sample size (shared by the scheme tests).

* mean: ``|m - mu| <= k * sigma / sqrt(n)``;
* std about the known mean (the RMS): ``|s / sigma - 1| <= k * sqrt((kurtosis - 1) / (4 n))``, the
  delta-method standard error of ``sqrt(mean((x - mu)^2))``;
* shape: the Kolmogorov-Smirnov statistic against the exact CDF, below ``1.63 / sqrt(n)`` (the
  asymptotic 1 % critical value). scipy computes it when installed; otherwise the hand-written
  :func:`ks_statistic` does (the two agree: see ``test_ks_statistic_matches_scipy``).

``k = 5``: with a fixed seed every check is deterministic, and a correct implementation would fail
one only with probability ~1e-6 if the seed were changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

K_SIGMA = 5.0
KS_CRITICAL = 1.63  # D_n * sqrt(n) above this: reject at the 1 % level


@functools.cache
def _truncated_moments(a: float, b: float) -> tuple[float, ...]:
    """E[Z^k], k = 0..4, for Z ~ N(0, 1) cut to [a, b], by the trapezoid rule (error ~1e-9)."""
    z = torch.linspace(a, b, 40_001, dtype=torch.float64)
    w = torch.exp(-(z**2) / 2)
    mass = torch.trapezoid(w, z)
    return tuple(float(torch.trapezoid(z**k * w, z) / mass) for k in range(5))


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def ks_statistic(sample: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Two-sided KS distance between the empirical CDF of ``sample`` and ``cdf`` (hand-written)."""
    x = sample.detach().flatten().to(torch.float64).sort().values
    n = x.numel()
    f = cdf(x).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def ks_distance(sample: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The KS statistic, by scipy when installed, else by :func:`ks_statistic`."""
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy is optional
        return ks_statistic(sample, cdf)
    x = sample.detach().flatten().to(torch.float64).numpy()
    return float(stats.kstest(x, lambda v: cdf(torch.from_numpy(v)).clamp(0, 1).numpy()).statistic)


@dataclass(frozen=True)
class Reference:
    """A distribution written from its textbook formula, independent of initlab's code."""

    kind: str  # "normal", "uniform" or "trunc_normal"
    mean: float = 0.0
    scale: float = 1.0  # the normal's std (before truncation)
    low: float = -math.inf
    high: float = math.inf

    def _moment(self, k: int) -> float:
        """E[(X - mean)^k] of the truncated normal."""
        a, b = (self.low - self.mean) / self.scale, (self.high - self.mean) / self.scale
        return _truncated_moments(a, b)[k] * self.scale**k

    @property
    def std(self) -> float:
        if self.kind == "normal":
            return self.scale
        if self.kind == "uniform":
            return (self.high - self.low) / math.sqrt(12)
        return math.sqrt(self._moment(2) - self._moment(1) ** 2)

    @property
    def center(self) -> float:
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "normal":
            return self.mean
        return self.mean + self._moment(1)

    @property
    def kurtosis(self) -> float:
        if self.kind == "normal":
            return 3.0
        if self.kind == "uniform":
            return 1.8
        m1 = self._moment(1)
        var = self._moment(2) - m1**2
        m4 = self._moment(4) - 4 * m1 * self._moment(3) + 6 * m1**2 * self._moment(2) - 3 * m1**4
        return m4 / var**2

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "uniform":
            return ((x - self.low) / (self.high - self.low)).clamp(0, 1)
        z = (x - self.mean) / self.scale
        if self.kind == "normal":
            return normal_cdf(z)
        lo, hi = (self.low - self.mean) / self.scale, (self.high - self.mean) / self.scale
        f_lo, f_hi = normal_cdf(torch.tensor(lo)), normal_cdf(torch.tensor(hi))
        return ((normal_cdf(z) - f_lo) / (f_hi - f_lo)).clamp(0, 1)


def check_sample(sample: torch.Tensor, ref: Reference, k: float = K_SIGMA) -> None:
    """Assert mean, std, support and shape of ``sample`` against ``ref``, within n-derived bounds."""
    x = sample.detach().flatten().to(torch.float64)
    n = x.numel()
    sigma = ref.std
    mean = float(x.mean())
    assert abs(mean - ref.center) <= k * sigma / math.sqrt(n), (mean, ref)
    rms = float(((x - ref.center) ** 2).mean().sqrt())
    tol = k * math.sqrt((ref.kurtosis - 1) / (4 * n))
    assert abs(rms / sigma - 1) <= tol, (rms, sigma, tol, ref)
    eps = 1e-6 * max(1.0, abs(ref.low) if math.isfinite(ref.low) else 1.0)
    if math.isfinite(ref.low):
        assert float(x.min()) >= ref.low - eps, (float(x.min()), ref)
    if math.isfinite(ref.high):
        assert float(x.max()) <= ref.high + eps, (float(x.max()), ref)
    d = ks_distance(x, ref.cdf)
    assert d <= KS_CRITICAL / math.sqrt(n), (d, KS_CRITICAL / math.sqrt(n), ref)


def check_std(
    sample: torch.Tensor, sigma: float, kurtosis: float = 3.0, k: float = K_SIGMA
) -> None:
    """Assert the RMS about 0 of a zero-mean ``sample`` is ``sigma`` within the n-derived bound."""
    x = sample.detach().flatten().to(torch.float64)
    n = x.numel()
    rms = float(x.pow(2).mean().sqrt())
    assert abs(rms / sigma - 1) <= k * math.sqrt((kurtosis - 1) / (4 * n)), (rms, sigma, n)
