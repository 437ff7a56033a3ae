"""Pareto/NBD (Schmittlein, Morrison & Colombo, 1987), as written by Fader & Hardie (2005,
"A note on deriving the Pareto/NBD model and related expressions").

While alive a customer buys at rate λ ~ Gamma(r, α) and dies at rate μ ~ Gamma(s, β), in
continuous time. One customer's likelihood is

    Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s  +  s/(r+s+x) · (F(t_x) - F(T)) ]

with F(τ) = (r+s+x) ∫_τ^∞ (α+u)^-(r+x) (β+u)^-(s+1) du, which Fader and Hardie write with
2F1(r+s+x, s+1; r+s+x+1; (α-β)/(α+τ)) (α+τ)^-(r+s+x) (or the mirror image when α < β).
That form overflows and, in the difference F(t_x) - F(T), cancels catastrophically. Euler's
transformation turns it into

    ln F(τ) = -(r+x) ln(α+τ) - s ln(β+τ) + ln 2F1(1, r+x; r+s+x+1; (α-β)/(α+τ))   (α ≥ β)

whose 2F1 lies between 1 and 1/(1-z); the difference is taken as ln F(t_x) +
log1p(-F(T)/F(t_x)) and the two terms are added by log-sum-exp.

The derivatives of 2F1 with respect to its parameters have no closed form worth
evaluating, so those (only) are central differences; the rest of the gradient is analytic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, expit, gammaln, hyp2f1  # type: ignore[import-untyped]  # scipy ships no types

from orbita.analytics.ltv.fitting import (
    Estimate,
    FitError,
    Floats,
    Frequencies,
    Objective,
    estimates,
    fold,
    maximise,
    standard_errors,
)

NAMES = ("r", "alpha", "s", "beta")


@dataclass(frozen=True, slots=True)
class _LogF:
    """ln F(τ) and its partial derivatives by (r, α, s, β)."""

    value: Floats
    dr: Floats
    dalpha: Floats
    ds: Floats
    dbeta: Floats


def _log_2f1(c: Floats, d: Floats, z: Floats) -> Floats:
    return np.asarray(np.log(hyp2f1(1.0, c, d, z)), dtype=np.float64)


def _log_f(
    r: float, alpha: float, s: float, beta: float, x: Floats, tau: Floats, *, gradient: bool
) -> _LogF:
    rx = r + x
    la, lb = np.log(alpha + tau), np.log(beta + tau)
    if alpha >= beta:
        # ln F = -(r+x) ln(α+τ) - s ln(β+τ) + ln 2F1(1, r+x; r+s+x+1; (α-β)/(α+τ))
        c, d = rx, rx + s + 1
        z = (alpha - beta) / (alpha + tau)
        value = -rx * la - s * lb + _log_2f1(c, d, z)
    else:
        # the mirror image: swap (α, r+x) with (β, s+1)
        c, d = s + 1 + 0 * x, rx + s + 1
        z = (beta - alpha) / (beta + tau)
        value = -(rx - 1) * la - (s + 1) * lb + _log_2f1(c, d, z)
    if not gradient:
        zero = np.zeros_like(value)
        return _LogF(value, zero, zero, zero, zero)
    h_c, h_d = 1e-6 * np.maximum(1.0, c), 1e-6 * np.maximum(1.0, d)
    by_c = (_log_2f1(c + h_c, d, z) - _log_2f1(c - h_c, d, z)) / (2 * h_c)
    by_d = (_log_2f1(c, d + h_d, z) - _log_2f1(c, d - h_d, z)) / (2 * h_d)
    # d/dz 2F1(1, c; d; z) = c/d 2F1(2, c+1; d+1; z)
    by_z = c / d * hyp2f1(2.0, c + 1, d + 1, z) / hyp2f1(1.0, c, d, z)
    if alpha >= beta:
        return _LogF(
            value,
            dr=-la + by_c + by_d,
            dalpha=-rx / (alpha + tau) + by_z * (beta + tau) / (alpha + tau) ** 2,
            ds=-lb + by_d,
            dbeta=-s / (beta + tau) - by_z / (alpha + tau),
        )
    return _LogF(
        value,
        dr=-la + by_d,
        dalpha=-(rx - 1) / (alpha + tau) - by_z / (beta + tau),
        ds=-lb + by_c + by_d,
        dbeta=-(s + 1) / (beta + tau) + by_z * (alpha + tau) / (beta + tau) ** 2,
    )


@dataclass(frozen=True, slots=True)
class _Terms:
    """ln of the two likelihood terms (without the common Γ(r+x) α^r β^s / Γ(r))."""

    alive: Floats  # -(r+x) ln(α+T) - s ln(β+T)
    dead: Floats  # ln s - ln(r+s+x) + ln(F(t_x) - F(T))
    gradient_alive: Floats  # 4 x n, by (r, α, s, β)
    gradient_dead: Floats


def _terms(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    x: Floats,
    t_x: Floats,
    T: Floats,
    *,
    gradient: bool,
) -> _Terms:
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    last = _log_f(r, alpha, s, beta, x, t_x, gradient=gradient)
    end = _log_f(r, alpha, s, beta, x, T, gradient=gradient)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.exp(end.value - last.value)  # F(T)/F(t_x) <= 1
        span = np.where(t_x < T, np.log1p(-np.minimum(ratio, 1.0)), -np.inf)
        dead = np.log(s) - np.log(r + s + x) + last.value + span
    if not gradient:
        return _Terms(alive, dead, np.empty(0), np.empty(0))
    gradient_alive = np.stack(
        [-np.log(alpha + T), -(r + x) / (alpha + T), -np.log(beta + T), -s / (beta + T)]
    )
    # d ln(F1 - F2) = (d ln F1 - ρ d ln F2) / (1 - ρ), ρ = F2/F1
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(t_x < T, 1 / (1 - ratio), 0.0)
        pairs = [
            (last.dr, end.dr),
            (last.dalpha, end.dalpha),
            (last.ds, end.ds),
            (last.dbeta, end.dbeta),
        ]
        gradient_dead = np.stack([(d1 - ratio * d2) * spread for d1, d2 in pairs])
    gradient_dead[0] -= 1 / (r + s + x)
    gradient_dead[2] += 1 / s - 1 / (r + s + x)
    return _Terms(alive, dead, gradient_alive, gradient_dead)


@dataclass(frozen=True, slots=True)
class ParetoNBD:
    """Fitted parameters; time in the unit of the data it was fitted on."""

    r: float
    alpha: float
    s: float
    beta: float

    def p_alive(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """P(alive at T | x, t_x, T): the share of the first likelihood term."""
        xs, ts, ages = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
        terms = _terms(self.r, self.alpha, self.s, self.beta, xs, ts, ages, gradient=False)
        return np.asarray(expit(terms.alive - terms.dead), dtype=np.float64)

    def expected_purchases(self, t: npt.ArrayLike) -> Floats:
        """E[X(t)] for a customer just acquired."""
        times = np.asarray(t, dtype=np.float64)
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        if abs(s - 1) < 1e-9:
            return np.asarray(r * beta / alpha * np.log1p(times / beta), dtype=np.float64)
        head = r * beta / (alpha * (s - 1))
        return np.asarray(head * (1 - (beta / (beta + times)) ** (s - 1)), dtype=np.float64)

    def expected_purchases_if_alive(self, t: float, x: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """E[Y(t) | alive at T, x, T]; it does not depend on t_x."""
        xs = np.asarray(x, dtype=np.float64)
        ages = np.asarray(T, dtype=np.float64)
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        if abs(s - 1) < 1e-9:
            rate = (r + xs) * (beta + ages) / (alpha + ages) * np.log1p(t / (beta + ages))
        else:
            head = (r + xs) * (beta + ages) / ((alpha + ages) * (s - 1))
            rate = head * (1 - ((beta + ages) / (beta + ages + t)) ** (s - 1))
        return np.asarray(rate, dtype=np.float64)

    def conditional_expected_purchases(
        self, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats:
        """E[Y(t) | x, t_x, T] (Fader & Hardie 2005, eq. 21)."""
        xs, ts, ages = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
        return self.expected_purchases_if_alive(t, xs, ages) * self.p_alive(xs, ts, ages)

    def log_likelihood(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> float:
        theta = np.log([self.r, self.alpha, self.s, self.beta])
        return float(_objective(fold(x, t_x, T), gradient=False)(theta)[0])


@dataclass(frozen=True, slots=True)
class ParetoNBDFit:
    model: ParetoNBD
    params: dict[str, Estimate]
    log_likelihood: float
    customers: int
    iterations: int
    converged: bool


def _objective(data: Frequencies, *, gradient: bool = True) -> Objective:
    counts, index = np.unique(data.x, return_inverse=True)
    count_weight = np.bincount(index.ravel(), weights=data.weight)
    w, n = data.weight, data.customers

    def objective(theta: Floats) -> tuple[float, Floats]:
        r, alpha, s, beta = (float(v) for v in np.exp(theta))
        t = _terms(r, alpha, s, beta, data.x, data.t_x, data.T, gradient=gradient)
        top = np.maximum(t.alive, t.dead)
        log_sum = top + np.log1p(np.exp(-np.abs(t.alive - t.dead)))
        per_count = gammaln(r + counts) - gammaln(r)
        value = (
            float(count_weight @ per_count)
            + n * (r * np.log(alpha) + s * np.log(beta))
            + float(w @ log_sum)
        )
        if not gradient:
            return value, np.zeros(4)
        dead_share = expit(t.dead - t.alive)
        mixed = (1 - dead_share) * t.gradient_alive + dead_share * np.nan_to_num(
            t.gradient_dead, nan=0.0, posinf=0.0, neginf=0.0
        )
        total = mixed @ w
        total[0] += float(count_weight @ (digamma(r + counts) - digamma(r))) + n * np.log(alpha)
        total[1] += n * r / alpha
        total[2] += n * np.log(beta)
        total[3] += n * s / beta
        return value, total * np.array([r, alpha, s, beta])

    return objective


def fit_paretonbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> ParetoNBDFit:
    """Maximum-likelihood Pareto/NBD with standard errors from the observed information."""
    data = fold(x, t_x, T)
    objective = _objective(data)
    # start with α and β at the mean age: the right scale whatever the time unit
    unit = float(np.log(np.average(data.T, weights=data.weight) or 1.0))
    optimum = maximise(objective, np.array([0.0, unit, 0.0, unit]), scale=data.customers)
    theta = optimum.log_params
    value = float(objective(theta)[0])
    if not np.isfinite(value):
        raise FitError("Pareto/NBD did not reach a finite likelihood")
    params = np.exp(theta)
    return ParetoNBDFit(
        model=ParetoNBD(*(float(p) for p in params)),
        params=estimates(NAMES, params, standard_errors(objective, theta)),
        log_likelihood=value,
        customers=int(data.customers),
        iterations=optimum.iterations,
        converged=optimum.converged,
    )
