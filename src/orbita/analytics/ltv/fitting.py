"""Shared machinery of the LTV fits: folded data, the optimiser and standard errors.

Every model is fitted by maximum likelihood on log-parameters (so they stay positive) with
L-BFGS-B and an analytic gradient. Rows that repeat the same (x, t_x, T) are folded into
one row with a weight, which shrinks a million customers measured in whole days to a few
hundred thousand rows. Standard errors come from the Hessian of the total log-likelihood
at the optimum, by central differences of the analytic gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize  # type: ignore[import-untyped]  # scipy ships no types

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# value and gradient of the total log-likelihood, in log-parameters
Objective = Callable[[Floats], tuple[float, Floats]]


class FitError(ValueError):
    """The data cannot be fitted (empty, negative or inconsistent values)."""


@dataclass(frozen=True, slots=True)
class Frequencies:
    """Purchase histories folded by distinct (x, t_x, T): x repeat purchases, the last at
    t_x, observed for T time units since the first purchase; `weight` customers each."""

    x: Floats
    t_x: Floats
    T: Floats
    weight: Floats
    # customer i of the input is row inverse[i]
    inverse: Ints

    @property
    def customers(self) -> float:
        return float(self.weight.sum())


def fold(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Frequencies:
    """Checks the histories and folds duplicate rows into weights."""
    xs = np.asarray(x, dtype=np.float64).ravel()
    ts = np.asarray(t_x, dtype=np.float64).ravel()
    ages = np.asarray(T, dtype=np.float64).ravel()
    if not (xs.size == ts.size == ages.size):
        raise FitError("x, t_x and T must have the same length")
    if xs.size == 0:
        raise FitError("no customers to fit")
    if not (np.isfinite(xs).all() and np.isfinite(ts).all() and np.isfinite(ages).all()):
        raise FitError("x, t_x and T must be finite")
    if (xs < 0).any() or (xs != np.floor(xs)).any():
        raise FitError("x (repeat purchases) must be whole numbers >= 0")
    if (ts < 0).any() or (ts > ages).any():
        raise FitError("t_x must lie in [0, T]")
    if ((xs == 0) & (ts != 0)).any():
        raise FitError("t_x must be 0 for customers without repeat purchases")
    # one int64 key per row from the ranks of its three values: sorting integers is several
    # times faster than a lexicographic sort of three float columns
    key = np.zeros(xs.size, dtype=np.int64)
    for column in (xs, ts, ages):
        size, rank = _ranks(column)
        key = key * size + rank
    _, first, inverse, weight = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    return Frequencies(
        xs[first], ts[first], ages[first], weight.astype(np.float64), inverse.ravel()
    )


def _ranks(column: Floats) -> tuple[int, Ints]:
    """Dense codes of a column's values, in their order: offsets for whole numbers in a
    modest range (counts, days), else ranks among the distinct values."""
    low, high = float(column.min()), float(column.max())
    if high - low < 1e6 and (column == np.floor(column)).all():
        return int(high - low) + 1, (column - low).astype(np.int64)
    values, rank = np.unique(column, return_inverse=True)
    return int(values.size), rank.ravel().astype(np.int64)


@dataclass(frozen=True, slots=True)
class Optimum:
    log_params: Floats
    log_likelihood: float
    iterations: int
    converged: bool
    message: str


def maximise(objective: Objective, start: Floats, *, scale: float) -> Optimum:
    """Maximises a total log-likelihood over log-parameters; `scale` (e.g. the number of
    customers) keeps the optimiser's numbers near 1 without changing the optimum."""

    def negative(theta: Floats) -> tuple[float, Floats]:
        with np.errstate(all="ignore"):
            value, gradient = objective(theta)
        if not np.isfinite(value) or not np.isfinite(gradient).all():
            return np.inf, np.zeros_like(theta)
        return -value / scale, -gradient / scale

    result = minimize(
        negative,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-20.0, 20.0)] * start.size,
        options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 20},
    )
    theta = np.asarray(result.x, dtype=np.float64)
    value, gradient = objective(theta)
    # L-BFGS-B may stop on "no progress in f" at machine precision: judge by the gradient
    converged = bool(result.success) or float(np.abs(gradient).max()) / scale < 1e-5
    return Optimum(theta, float(value), int(result.nit), converged, str(result.message))


def standard_errors(objective: Objective, log_params: Floats) -> Floats:
    """Standard errors of the parameters (not their logs) from the observed information.

    At the optimum the gradient is zero, so the covariance of the parameters is the
    covariance of their logs scaled by the parameters (the delta method, exact to first
    order); the Hessian in log-parameters is better conditioned to difference.
    """
    k = log_params.size
    hessian = np.empty((k, k))
    for i in range(k):
        step = 1e-5 * max(1.0, abs(float(log_params[i])))
        up, down = log_params.copy(), log_params.copy()
        up[i] += step
        down[i] -= step
        hessian[i] = (objective(up)[1] - objective(down)[1]) / (2 * step)
    hessian = (hessian + hessian.T) / 2
    try:
        covariance = np.linalg.inv(-hessian)
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    variance = np.diag(covariance)
    params = np.exp(log_params)
    return np.where(variance > 0, params * np.sqrt(np.abs(variance)), np.nan)


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    standard_error: float


def estimates(names: tuple[str, ...], params: Floats, errors: Floats) -> dict[str, Estimate]:
    return {
        name: Estimate(float(value), float(error))
        for name, value, error in zip(names, params, errors, strict=True)
    }


def as_json(params: Mapping[str, Estimate]) -> dict[str, dict[str, float | None]]:
    return {
        name: {
            "value": e.value,
            "standard_error": e.standard_error if np.isfinite(e.standard_error) else None,
        }
        for name, e in params.items()
    }
