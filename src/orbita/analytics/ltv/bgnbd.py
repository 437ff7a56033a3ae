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
        tail = _survival(r, b, a + b - 1, z)  # (α/(α+t))^r 2F1(r, b; a+b-1; z)
        return np.asarray((a + b - 1) / (a - 1) * (1 - tail), dtype=np.float64)

    def expected_purchases_if_alive(self, t: float, x: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """E[Y(t) | alive at T, x, T]: repeat purchases in the next t of a customer still
        alive; it does not depend on t_x, so CLV evaluates it once per distinct (x, T)."""
        xs = np.asarray(x, dtype=np.float64)
        ages = np.asarray(T, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + ages + t)
        # ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)
        tail = _survival(r + xs, b + xs, a + b + xs - 1, z)
        return np.asarray((a + b + xs - 1) / (a - 1) * (1 - tail), dtype=np.float64)

    def conditional_expected_purchases(
        self, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats:
        """E[Y(t) | x, t_x, T]: repeat purchases in the next t (FHL eq. 10)."""
        xs, ts, ages = _arrays(x, t_x, T)
        alive = self.p_alive(xs, ts, ages)
        return self.expected_purchases_if_alive(t, xs, ages) * alive

    def log_likelihood(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> float:
        """Total log-likelihood of the given customers."""
        data = fold(x, t_x, T)
        theta = np.log([self.r, self.alpha, self.a, self.b])
        return float(_Objective(data)(theta)[0])


@dataclass(frozen=True, slots=True)
class BGNBDFit:
    model: BGNBD
    params: dict[str, Estimate]
    log_likelihood: float  # the total over customers, not a mean
    customers: int
    iterations: int
    converged: bool


def _survival(A: npt.ArrayLike, B: npt.ArrayLike, C: npt.ArrayLike, z: npt.ArrayLike) -> Floats:
    """(1-z)^A 2F1(A, B; C; z) for 0 <= z < 1, with C - B = a - 1 (both expectations).

    It is E[((1-z)/(1-zu))^A] over u ~ Beta(B, a-1), so in (0, 1]. Three evaluations, each
    where the one before is not finite:
    - Euler's transformation (1-z)^(a-1) 2F1(C-A, a-1; C; z): bounded for frequent buyers,
      whose untransformed 2F1 overflows;
    - the untransformed form in logs: a degenerate fit (a and b in the millions: one fixed
      drop-out probability) underflows (1-z)^(a-1) to 0 and overflows Euler's 2F1;
    - the limit as a+b grows, u at its mean B/C: where scipy's 2F1 fails both ways, seen
      with such fits near z = 1 (relative error of order 1/(a+b)).
    """
    A, B, C, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (A, B, C, z)))
    with np.errstate(all="ignore"):
        tail = np.asarray((1 - z) ** (C - B) * hyp2f1(C - A, C - B, C, z), dtype=np.float64)
        bad = ~np.isfinite(tail)
        if bad.any():
            A, B, C, z = A[bad], B[bad], C[bad], z[bad]
            direct = np.exp(A * np.log1p(-z) + np.log(hyp2f1(A, B, C, z)))
            limit = np.exp(A * (np.log1p(-z) - np.log1p(-z * B / C)))
            tail[bad] = np.where(np.isfinite(direct), direct, limit)
    return tail


def _arrays(
    x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> tuple[Floats, Floats, Floats]:
    return (
        np.asarray(x, dtype=np.float64),
        np.asarray(t_x, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )


class _Objective:
    """Total log-likelihood and its gradient in log-parameters, on folded data.

    Writing d = ln(second term) - ln(first term), a customer's last term is
    -(r+x) ln(α+T) + softplus(d), with d = ln a - ln(b+x-1) - (r+x) [ln(α+t_x) - ln(α+T)]
    for repeat buyers only. Terms in T alone are summed per distinct T, terms in x alone
    per distinct count, and logs of α+t_x and α+T are taken once per distinct value; only
    softplus(d) and its weight in the gradient are computed per row, and only for rows
    with x > 0.
    """

    def __init__(self, data: Frequencies) -> None:
        self.customers = data.customers
        counts, count_index = np.unique(data.x, return_inverse=True)
        self.counts = counts
        self.count_weight = np.bincount(count_index.ravel(), weights=data.weight)
        ages, age_index = np.unique(data.T, return_inverse=True)
        self.ages = ages
        self.age_weight = np.bincount(age_index.ravel(), weights=data.weight)
        self.age_x_weight = np.bincount(age_index.ravel(), weights=data.weight * data.x)
        repeat = data.x > 0
        lasts, last_index = np.unique(data.t_x[repeat], return_inverse=True)
        self.lasts = lasts
        self.last_index = last_index.ravel().astype(np.intp)
        self.age_index = age_index.ravel()[repeat].astype(np.intp)
        self.repeat_count = count_index.ravel()[repeat].astype(np.intp)
        self.repeat_x = data.x[repeat]
        self.repeat_weight = data.weight[repeat]

    def __call__(self, theta: Floats) -> tuple[float, Floats]:
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        k, cw, n = self.counts, self.count_weight, self.customers
        # terms that depend only on the count
        per_count = gammaln(r + k) - gammaln(r) + betaln(a, b + k) - betaln(a, b)
        g_r = digamma(r + k) - digamma(r)
        g_a = digamma(a + b) - digamma(a + b + k)
        g_b = digamma(b + k) - digamma(b) + g_a
        log_b_x1 = np.log(np.where(k > 0, b + k - 1, 1.0))  # used for k >= 1 only
        # terms that depend only on T: -(r+x) ln(α+T) summed over everyone
        log_age = np.log(alpha + self.ages)
        age_r = r * self.age_weight + self.age_x_weight
        value = float(cw @ per_count) + n * r * np.log(alpha) - float(age_r @ log_age)
        dr = float(cw @ g_r) + n * np.log(alpha) - float(self.age_weight @ log_age)
        dalpha = n * r / alpha - float(age_r @ (1 / (alpha + self.ages)))
        # repeat buyers: softplus(d) and its derivative, the share of the second term
        log_last = np.log(alpha + self.lasts)
        rx = r + self.repeat_x
        gap = log_last[self.last_index] - log_age[self.age_index]
        d = np.log(a) - log_b_x1[self.repeat_count] - rx * gap
        e = np.exp(-np.abs(d))
        softplus = np.maximum(d, 0.0) + np.log1p(e)
        share = np.where(d >= 0, 1.0, e) / (1.0 + e)
        w = self.repeat_weight
        ws = w * share
        value += float(w @ softplus)
        dr -= float(ws @ gap)
        inverse_gap = (1 / (alpha + self.lasts))[self.last_index] - (1 / (alpha + self.ages))[
            self.age_index
        ]
        dalpha -= float(ws @ (rx * inverse_gap))
        da = float(cw @ g_a) + float(ws.sum()) / a
        db = float(cw @ g_b) - float(ws @ np.exp(-log_b_x1)[self.repeat_count])
        return value, np.array([dr * r, dalpha * alpha, da * a, db * b])


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BGNBDFit:
    """Maximum-likelihood BG/NBD with standard errors from the observed information."""
    data = fold(x, t_x, T)
    objective = _Objective(data)
    # start with α at the mean age: the right scale whatever the time unit
    unit = float(np.average(data.T, weights=data.weight)) or 1.0
    start = np.array([0.0, np.log(unit), 0.0, 0.0])
    optimum = maximise(objective, start, scale=data.customers)
    theta = optimum.log_params
    value = float(objective(theta)[0])
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
