"""BG/NBD: beta-geometric / negative binomial purchase model (Fader, Hardie & Lee, 2005).

While alive a customer buys as a Poisson process with rate λ ~ Gamma(r, α); after each
repeat purchase they drop out with probability p ~ Beta(a, b). A customer is summarised
by x repeat purchases, the last at t_x, over T time units since their first purchase.

The log-likelihood of one customer (FHL 2005, eq. 6, in logs):

    ln Γ(r+x) - ln Γ(r) + ln B(a, b+x) - ln B(a, b) + r ln α
      + ln[ (α+T)^-(r+x) + [x>0] a/(b+x-1) (α+t_x)^-(r+x) ]

The first four terms depend only on x, so they are computed once per distinct count; the
last is a log-sum-exp of two terms, which stays finite for any x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1  # type: ignore[import-untyped]  # scipy ships no types

from orbita.analytics.ltv.fitting import (
    Estimate,
    FitError,
    Floats,
    Frequencies,
    estimates,
    fold,
    maximise,
    standard_errors,
)

NAMES = ("r", "alpha", "a", "b")


@dataclass(frozen=True, slots=True)
class BGNBD:
    """Fitted parameters; time in the unit of the data it was fitted on."""

    r: float
    alpha: float
    a: float
    b: float

    def _log_odds_dead(self, x: Floats, t_x: Floats, T: Floats) -> Floats:
        """ln of the second likelihood term over the first ([x>0], else -inf)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = (
                np.log(a) - np.log(b + x - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
            )
        return np.where(x > 0, odds, -np.inf)

    def p_alive(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """P(still alive at T | x, t_x, T) (FHL 2005 note on P(alive))."""
        xs, ts, ages = _arrays(x, t_x, T)
        return np.asarray(expit(-self._log_odds_dead(xs, ts, ages)), dtype=np.float64)

    def expected_purchases(self, t: npt.ArrayLike) -> Floats:
        """E[X(t)]: repeat purchases in t of a customer just acquired (FHL eq. 9)."""
        times = np.asarray(t, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = times / (alpha + times)
        # Euler's transformation of (α/(α+t))^r 2F1(r, b; a+b-1; z): bounded for any t
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
        return np.asarray((a + b - 1) / (a - 1) * (1 - tail), dtype=np.float64)

    def conditional_expected_purchases(
        self, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats:
        """E[Y(t) | x, t_x, T]: repeat purchases in the next t (FHL eq. 10)."""
        xs, ts, ages = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + ages + t)
        # Euler's transformation of ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z),
        # which overflows for frequent buyers in the untransformed form
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + xs - 1, z)
        alive = self.p_alive(xs, ts, ages)
        return np.asarray((a + b + xs - 1) / (a - 1) * (1 - tail) * alive, dtype=np.float64)

    def log_likelihood(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> float:
        """Total log-likelihood of the given customers."""
        data = fold(x, t_x, T)
        theta = np.log([self.r, self.alpha, self.a, self.b])
        return _Objective(data)(theta)[0]


@dataclass(frozen=True, slots=True)
class BGNBDFit:
    model: BGNBD
    params: dict[str, Estimate]
    log_likelihood: float  # the total over customers, not a mean
    customers: int
    iterations: int
    converged: bool


def _arrays(
    x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> tuple[Floats, Floats, Floats]:
    return (
        np.asarray(x, dtype=np.float64),
        np.asarray(t_x, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )


class _Objective:
    """Total log-likelihood and its gradient in log-parameters, on folded data."""

    def __init__(self, data: Frequencies) -> None:
        self.data = data
        counts, index = np.unique(data.x, return_inverse=True)
        self.counts = counts
        self.index = index.ravel()
        # customers per distinct count: the weights of the count-only terms
        self.count_weight = np.bincount(self.index, weights=data.weight)
        self.repeat = data.x > 0

    def __call__(self, theta: Floats) -> tuple[float, Floats]:
        r, alpha, a, b = np.exp(theta)
        d, k, cw = self.data, self.counts, self.count_weight
        w = d.weight
        # terms that depend only on the count
        per_count = gammaln(r + k) - gammaln(r) + betaln(a, b + k) - betaln(a, b)
        g_r = digamma(r + k) - digamma(r)
        g_a = digamma(a + b) - digamma(a + b + k)
        g_b = digamma(b + k) - digamma(b) + g_a
        with np.errstate(divide="ignore", invalid="ignore"):
            log_b_x1 = np.where(k > 0, np.log(b + k - 1), 0.0)[self.index]
        rx = r + d.x
        log_age = np.log(alpha + d.T)
        log_last = np.log(alpha + d.t_x)
        first = -rx * log_age
        second = np.where(self.repeat, np.log(a) - log_b_x1 - rx * log_last, -np.inf)
        top = np.maximum(first, second)
        log_sum = top + np.log1p(np.exp(-np.abs(first - second)))
        # the share of the second ("dropped out after the last purchase") term
        share = expit(second - first)
        value = float(cw @ per_count) + r * np.log(alpha) * d.customers + float(w @ log_sum)
        inv_age = 1 / (alpha + d.T)
        inv_last = 1 / (alpha + d.t_x)
        dr = (
            float(cw @ g_r)
            + np.log(alpha) * d.customers
            - float(w @ ((1 - share) * log_age + share * log_last))
        )
        dalpha = r / alpha * d.customers - float(
            w @ (rx * ((1 - share) * inv_age + share * inv_last))
        )
        da = float(cw @ g_a) + float(w @ share) / a
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_b_x1 = np.where(self.repeat, np.exp(-log_b_x1), 0.0)
        db = float(cw @ g_b) - float(w @ (share * inv_b_x1))
        gradient = np.array([dr * r, dalpha * alpha, da * a, db * b])
        return value, gradient


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BGNBDFit:
    """Maximum-likelihood BG/NBD with standard errors from the observed information."""
    data = fold(x, t_x, T)
    # fit in a time unit where the mean age is 1, so that α starts near its optimum's scale
    unit = float(np.average(data.T, weights=data.weight)) or 1.0
    scaled = Frequencies(data.x, data.t_x / unit, data.T / unit, data.weight, data.inverse)
    optimum = maximise(_Objective(scaled), np.zeros(4), scale=data.customers)
    theta = optimum.log_params + np.array([0.0, np.log(unit), 0.0, 0.0])
    objective = _Objective(data)
    value = objective(theta)[0]
    if not np.isfinite(value):
        raise FitError("BG/NBD did not reach a finite likelihood")
    params = np.exp(theta)
    return BGNBDFit(
        model=BGNBD(*(float(p) for p in params)),
        params=estimates(NAMES, params, standard_errors(objective, theta)),
        log_likelihood=value,
        customers=int(data.customers),
        iterations=optimum.iterations,
        converged=optimum.converged,
    )
