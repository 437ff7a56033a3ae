"""LTV models against the published CDNOW fits and against `lifetimes` on the same data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter
from lifetimes.datasets import load_cdnow_summary, load_cdnow_summary_data_with_monetary_value
from scipy.integrate import quad

from orbita.analytics.ltv import (
    BGNBD,
    FitError,
    ParetoNBD,
    customer_values,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_paretonbd,
    fold,
)
from orbita.analytics.ltv import bgnbd as bgnbd_module
from orbita.analytics.ltv import gammagamma as gammagamma_module
from orbita.analytics.ltv import paretonbd as paretonbd_module
from orbita.analytics.ltv.fitting import Objective
from orbita.analytics.ltv.paretonbd import _log_f

WEEKS_PER_MONTH = 4.345  # CDNOW is in weeks; lifetimes' "W" frequency


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_summary_data_with_monetary_value()


def columns(data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return data["frequency"].to_numpy(), data["recency"].to_numpy(), data["T"].to_numpy()


def sample(data: pd.DataFrame) -> pd.DataFrame:
    return data.sample(200, random_state=7)


def close(ours: float | np.ndarray, theirs: float | np.ndarray, rtol: float = 5e-4) -> bool:
    """Agreement to 3 significant figures."""
    return bool(np.allclose(ours, theirs, rtol=rtol, atol=0))


def test_cdnow_summary_is_the_published_one(cdnow: pd.DataFrame) -> None:
    assert len(load_cdnow_summary()) == len(cdnow) == 2357
    assert int((cdnow["frequency"] > 0).sum()) == 946


def test_bgnbd_matches_fader_hardie_lee_2005(cdnow: pd.DataFrame) -> None:
    fit = fit_bgnbd(*columns(cdnow))
    got = {name: e.value for name, e in fit.params.items()}
    assert got == pytest.approx({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}, abs=6e-4)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    assert fit.converged and fit.customers == 2357
    assert all(0 < e.standard_error < e.value for e in fit.params.values())


def test_bgnbd_matches_lifetimes(cdnow: pd.DataFrame) -> None:
    x, t_x, T = columns(cdnow)
    ours = fit_bgnbd(x, t_x, T)
    theirs = BetaGeoFitter().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    for name in ("r", "alpha", "a", "b"):
        assert close(ours.params[name].value, theirs.params_[name]), name
    # lifetimes reports the mean negative log-likelihood in its rescaled time unit
    # (time x scale): undo both to compare totals
    total = -theirs._negative_log_likelihood_ * len(x) + np.log(theirs._scale) * x.sum()
    assert close(ours.log_likelihood, total)
    # and our own model gives the same total at lifetimes' parameters
    at_theirs = BGNBD(*(float(theirs.params_[n]) for n in ("r", "alpha", "a", "b")))
    assert close(at_theirs.log_likelihood(x, t_x, T), total, rtol=1e-9)


def test_bgnbd_predictions_match_lifetimes(cdnow: pd.DataFrame) -> None:
    theirs = BetaGeoFitter().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    ours = fit_bgnbd(*columns(cdnow)).model
    some = sample(cdnow)
    x, t_x, T = columns(some)
    assert close(ours.p_alive(x, t_x, T), theirs.conditional_probability_alive(x, t_x, T))
    for t in (1.0, 10.0, 52.0):
        assert close(
            ours.conditional_expected_purchases(t, x, t_x, T),
            theirs.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T),
        )
    times = np.array([1.0, 10.0, 39.0, 78.0])
    assert close(
        ours.expected_purchases(times), theirs.expected_number_of_purchases_up_to_time(times)
    )


def test_paretonbd_matches_published_and_lifetimes(cdnow: pd.DataFrame) -> None:
    x, t_x, T = columns(cdnow)
    fit = fit_paretonbd(x, t_x, T)
    got = {name: e.value for name, e in fit.params.items()}
    assert got == pytest.approx(
        {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}, abs=2.5e-3
    )
    assert fit.log_likelihood == pytest.approx(-9595.0, abs=0.05)
    assert fit.converged
    theirs = ParetoNBDFitter().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    for name in ("r", "alpha", "s", "beta"):
        assert close(fit.params[name].value, theirs.params_[name], rtol=1e-3), name
    # lifetimes reports the total (over its unit weights) in its rescaled time unit
    total = -theirs._negative_log_likelihood_ + np.log(theirs._scale) * x.sum()
    assert close(fit.log_likelihood, total)
    some = sample(cdnow)
    sx, st, sT = columns(some)
    assert close(fit.model.p_alive(sx, st, sT), theirs.conditional_probability_alive(sx, st, sT))
    assert close(
        fit.model.conditional_expected_purchases(10.0, sx, st, sT),
        theirs.conditional_expected_number_of_purchases_up_to_time(10.0, sx, st, sT),
    )


def test_gamma_gamma_matches_published_and_lifetimes(cdnow: pd.DataFrame) -> None:
    fit = fit_gamma_gamma(cdnow["frequency"], cdnow["monetary_value"])
    got = {name: e.value for name, e in fit.params.items()}
    assert got == pytest.approx({"p": 6.25, "q": 3.74, "gamma": 15.44}, abs=0.01)
    assert fit.customers == 946 and fit.converged
    buyers = cdnow[cdnow["frequency"] > 0]
    theirs = GammaGammaFitter().fit(buyers["frequency"], buyers["monetary_value"])
    for ours_name, their_name in (("p", "p"), ("q", "q"), ("gamma", "v")):
        assert close(fit.params[ours_name].value, theirs.params_[their_name]), ours_name
    assert close(fit.log_likelihood, -theirs._negative_log_likelihood_ * len(buyers))
    assert close(
        fit.model.expected_value(buyers["frequency"], buyers["monetary_value"]),
        theirs.conditional_expected_average_profit(buyers["frequency"], buyers["monetary_value"]),
    )


def test_clv_matches_lifetimes(cdnow: pd.DataFrame) -> None:
    x, t_x, T = columns(cdnow)
    purchases = fit_bgnbd(x, t_x, T).model
    spend = fit_gamma_gamma(x, cdnow["monetary_value"]).model
    bg = BetaGeoFitter().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    buyers = cdnow[cdnow["frequency"] > 0]
    gg = GammaGammaFitter().fit(buyers["frequency"], buyers["monetary_value"])
    some = sample(cdnow)
    sx, st, sT = columns(some)
    ours = customer_values(
        purchases,
        spend,
        x=sx,
        t_x=st,
        T=sT,
        monetary=some["monetary_value"],
        months=12,
        monthly_discount=0.01,
        time_units_per_month=WEEKS_PER_MONTH,
    )
    theirs = gg.customer_lifetime_value(
        bg,
        some["frequency"],
        some["recency"],
        some["T"],
        some["monetary_value"],
        time=12,
        discount_rate=0.01,
        freq="W",
    )
    assert close(ours.clv, theirs.to_numpy())
    assert close(ours.p_alive, bg.conditional_probability_alive(sx, st, sT))


@pytest.mark.parametrize(
    "params", [(0.5, 10.0, 0.6, 12.0), (0.5, 15.0, 0.6, 3.0), (2.0, 5.0, 3.0, 40.0)]
)
def test_gradients_are_the_derivatives(cdnow: pd.DataFrame, params: tuple[float, ...]) -> None:
    data = fold(*columns(cdnow))
    theta = np.log(params)
    for objective in (bgnbd_module._Objective(data), paretonbd_module._objective(data)):
        assert_gradient(objective, theta)
    buyers = cdnow[cdnow["frequency"] > 0]
    spend = gammagamma_module._objective(
        buyers["frequency"].to_numpy(dtype=float), buyers["monetary_value"].to_numpy()
    )
    assert_gradient(spend, np.log(params[1:]))


def assert_gradient(objective: Objective, theta: np.ndarray) -> None:
    analytic = objective(theta)[1]
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = 1e-5
        numeric[i] = (objective(theta + step)[0] - objective(theta - step)[0]) / 2e-5
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6 * np.abs(numeric).max())


@pytest.mark.parametrize(("alpha", "beta"), [(10.0, 12.0), (12.0, 3.0), (0.5, 40.0)])
def test_pareto_integral_form_is_the_integral(alpha: float, beta: float) -> None:
    """ln F(τ) in its transformed 2F1 form equals (r+s+x) ∫_τ^∞ (α+u)^-(r+x) (β+u)^-(s+1) du."""
    r, s = 0.55, 0.6
    for x, tau in ((0.0, 0.0), (3.0, 20.0), (40.0, 5.0)):
        got = _log_f(r, alpha, s, beta, np.array([x]), np.array([tau]), gradient=False).value[0]
        integral, _ = quad(
            lambda u, x=x: (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1),
            tau,
            np.inf,
            epsabs=0,
            epsrel=1e-12,
            limit=200,
        )
        assert got == pytest.approx(np.log((r + s + x) * integral), abs=1e-8)


def test_paretonbd_is_finite_for_heavy_buyers() -> None:
    """Frequent buyers overflow the untransformed hypergeometric form."""
    model = ParetoNBD(r=0.55, alpha=10.6, s=0.61, beta=11.7)
    x = np.array([150.0, 300.0, 600.0])
    t_x = np.array([70.0, 77.0, 30.0])
    T = np.array([78.0, 78.0, 78.0])
    alive = model.p_alive(x, t_x, T)
    assert np.isfinite(alive).all()
    assert alive[1] > alive[0] > alive[2]
    assert np.isfinite(model.log_likelihood(x, t_x, T))


def survival_by_series(A: float, B: float, C: float, z: float) -> float:
    """(1-z)^A 2F1(A, B; C; z) by summing the series term by term in logs (all terms are
    positive for these arguments): slow, but nothing in it can overflow."""
    term, total, k = 0.0, 1.0, 0
    while True:
        term += math.log((A + k) * (B + k) / ((C + k) * (k + 1)) * z)
        total += math.exp(term)
        k += 1
        if math.exp(term) < 1e-17 * total:
            return math.exp(A * math.log1p(-z)) * total


def test_bgnbd_expectations_are_finite_for_a_degenerate_fit() -> None:
    """The fit of the 150-customer demo: a and b in the millions (one fixed drop-out
    probability). Euler's form of 2F1 was 0 x inf there, and the demo's LTV NaN."""
    model = BGNBD(
        r=0.06196624273389795, alpha=1.1454869790816902, a=3790088.154562025, b=649561.2253397028
    )
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    x = np.array([0.0, 1.0, 2.0, 0.0, 5.0, 40.0])
    T = np.array([20.0, 31.0, 8.0, 0.5, 30.0, 30.0])
    t = 360.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = model.expected_purchases_if_alive(t, x, T)
        unconditional = model.expected_purchases(np.array([1.0, 30.0, t]))
        conditional = model.conditional_expected_purchases(t, x, np.minimum(T, 5.0), T)
    z = t / (alpha + T + t)
    expected = [
        (a + b + k - 1) / (a - 1) * (1 - survival_by_series(r + k, b + k, a + b + k - 1, w))
        for k, w in zip(x, z, strict=True)
    ]
    assert got == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(unconditional).all() and (np.diff(unconditional) > 0).all()
    assert np.isfinite(conditional).all()
    # Near z = 1, with round parameters, scipy's 2F1 fails in both forms: the limit holds.
    steady = BGNBD(r=1.0, alpha=1.0, a=4e6, b=6e5)
    counts = np.array([0.0, 5.0, 1.0])
    ages = np.array([1.0, 1.0, 3.0])
    z_near = 198.0 / (1.0 + ages + 198.0)
    near = steady.expected_purchases_if_alive(198.0, counts, ages)
    assert near == pytest.approx(
        [
            (4e6 + 6e5 + k - 1)
            / (4e6 - 1)
            * (1 - survival_by_series(1.0 + k, 6e5 + k, 4e6 + 6e5 + k - 1, w))
            for k, w in zip(counts, z_near, strict=True)
        ],
        rel=1e-6,
    )


def test_folding_keeps_customers_and_order() -> None:
    x = np.array([0, 2, 0, 2, 1])
    t_x = np.array([0, 5, 0, 5, 3])
    T = np.array([10, 9, 10, 9, 8])
    data = fold(x, t_x, T)
    assert data.x.size == 3 and data.customers == 5
    assert np.array_equal(data.x[data.inverse], x)
    assert np.array_equal(data.T[data.inverse], T)


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([1.5], [1.0], [2.0], "whole numbers"),
        ([1], [3.0], [2.0], "t_x"),
        ([0], [1.0], [2.0], "t_x must be 0"),
        ([], [], [], "no customers"),
    ],
)
def test_bad_histories_are_refused(
    x: list[float], t_x: list[float], T: list[float], message: str
) -> None:
    with pytest.raises(FitError, match=message):
        fit_bgnbd(x, t_x, T)
