"""Gamma-Gamma spend model (Fader, Hardie & Lee, 2005, "The Gamma-Gamma model of
monetary value").

A customer's order values are z ~ Gamma(p, ν) around their own mean p/ν, with
ν ~ Gamma(q, γ) across customers; fitted on repeat buyers (x >= 1) from x and the mean
value m of their repeat orders. One customer's log-likelihood (the density of m):

    ln Γ(px+q) - ln Γ(px) - ln Γ(q) + q ln γ + (px-1) ln m + px ln x - (px+q) ln(xm+γ)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, gammaln  # type: ignore[import-untyped]  # scipy ships no types

from orbita.analytics.ltv.fitting import (
    Estimate,
    FitError,
    Floats,
    Objective,
    estimates,
    maximise,
    standard_errors,
)

NAMES = ("p", "q", "gamma")


@dataclass(frozen=True, slots=True)
class GammaGamma:
    p: float
    q: float
    gamma: float

    @property
    def mean_value(self) -> float:
        """E[z] over customers: p γ / (q - 1) (needs q > 1)."""
        return self.p * self.gamma / (self.q - 1)

    def expected_value(self, x: npt.ArrayLike, m: npt.ArrayLike) -> Floats:
        """E[z | x, m]: a customer's expected order value, their mean m shrunk towards
        the population's by how many orders it rests on (eq. 5); x = 0 gives the mean."""
        xs = np.asarray(x, dtype=np.float64)
        ms = np.where(xs > 0, np.asarray(m, dtype=np.float64), 0.0)
        p, q, gamma = self.p, self.q, self.gamma
        return np.asarray((p * gamma + p * xs * ms) / (p * xs + q - 1), dtype=np.float64)

    def log_likelihood(self, x: npt.ArrayLike, m: npt.ArrayLike) -> float:
        xs, ms = _repeat_buyers(x, m)
        return float(_objective(xs, ms)(np.log([self.p, self.q, self.gamma]))[0])


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    model: GammaGamma
    params: dict[str, Estimate]
    log_likelihood: float
    customers: int  # repeat buyers fitted on
    iterations: int
    converged: bool


def _repeat_buyers(x: npt.ArrayLike, m: npt.ArrayLike) -> tuple[Floats, Floats]:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ms = np.asarray(m, dtype=np.float64).ravel()
    if xs.size != ms.size:
        raise FitError("x and monetary value must have the same length")
    keep = xs > 0
    xs, ms = xs[keep], ms[keep]
    if xs.size == 0:
        raise FitError("no repeat buyers to fit the spend model on")
    if not (np.isfinite(ms).all() and (ms > 0).all()):
        raise FitError("monetary value must be > 0 for repeat buyers")
    return xs, ms


def _objective(x: Floats, m: Floats) -> Objective:
    counts, index = np.unique(x, return_inverse=True)
    index = index.ravel()
    count_weight = np.bincount(index).astype(np.float64)
    n = float(x.size)
    log_m = np.log(m)
    x_log_m = float(x @ log_m)
    sum_log_m = float(log_m.sum())
    total = x * m  # a customer's repeat spend
    # per distinct count: px ln x, summed with its customers
    count_log = count_weight * np.log(counts)

    def objective(theta: Floats) -> tuple[float, Floats]:
        p, q, gamma = (float(v) for v in np.exp(theta))
        pk = p * counts
        per_count = gammaln(pk + q) - gammaln(pk) + pk * np.log(counts)
        shifted = total + gamma
        log_total = np.log(shifted)
        x_log_total, sum_log_total = float(x @ log_total), float(log_total.sum())
        inverse = 1 / shifted
        x_inverse, sum_inverse = float(x @ inverse), float(inverse.sum())
        value = (
            float(count_weight @ per_count)
            - n * gammaln(q)
            + n * q * np.log(gamma)
            + p * x_log_m
            - sum_log_m
            - p * x_log_total
            - q * sum_log_total
        )
        dp = (
            float(count_weight @ (counts * (digamma(pk + q) - digamma(pk))))
            + x_log_m
            + float(count_log @ counts)
            - x_log_total
        )
        dq = float(count_weight @ digamma(pk + q)) - n * digamma(q) + n * np.log(gamma)
        dq -= sum_log_total
        dgamma = n * q / gamma - p * x_inverse - q * sum_inverse
        return value, np.array([dp * p, dq * q, dgamma * gamma])

    return objective


def fit_gamma_gamma(x: npt.ArrayLike, m: npt.ArrayLike) -> GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma on the repeat buyers (x >= 1) among the given."""
    xs, ms = _repeat_buyers(x, m)
    objective = _objective(xs, ms)
    # start with γ at the mean order value: the right scale whatever the currency
    start = np.array([0.0, 0.0, np.log(float(ms.mean()))])
    optimum = maximise(objective, start, scale=float(xs.size))
    theta = optimum.log_params
    value = float(objective(theta)[0])
    if not np.isfinite(value):
        raise FitError("Gamma-Gamma did not reach a finite likelihood")
    params = np.exp(theta)
    return GammaGammaFit(
        model=GammaGamma(*(float(v) for v in params)),
        params=estimates(NAMES, params, standard_errors(objective, theta)),
        log_likelihood=value,
        customers=int(xs.size),
        iterations=optimum.iterations,
        converged=optimum.converged,
    )
