"""The BG/NBD sampler agrees with the model's closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orbita.simulation.btyd import BGNBD, GammaGamma, hyp2f1, simulate_repeats


def test_hyp2f1_matches_a_known_closed_form() -> None:
    # 2F1(1, 1; 2; z) = -ln(1 - z) / z
    for z in (0.1, 0.5, 0.9):
        assert hyp2f1(1, 1, 2, z) == pytest.approx(-math.log(1 - z) / z, rel=1e-10)


def test_repeat_purchases_follow_bgnbd_expectations() -> None:
    model = BGNBD(r=0.6, alpha=90.0, a=1.6, b=5.0)
    rng = np.random.Generator(np.random.PCG64(11))
    n, horizon = 40_000, 300.0
    rate, dropout = model.sample(rng, n)
    repeats = simulate_repeats(
        rng,
        rate=rate,
        dropout=dropout,
        first=np.zeros(n),
        horizon=horizon,
        active=np.ones(n, dtype=np.bool_),
    )
    counts = np.bincount(repeats.customer, minlength=n)
    assert counts.mean() == pytest.approx(model.expected_repeats(horizon), rel=0.05)
    assert (counts == 0).mean() == pytest.approx(model.p_no_repeat(horizon), abs=0.01)
    # Nobody buys after dropping out, and every purchase is inside the horizon.
    assert (repeats.time < horizon).all()
    last = np.zeros(n)
    np.maximum.at(last, repeats.customer, repeats.time)
    dropped = np.isfinite(repeats.dropped_at)
    assert np.allclose(last[dropped], repeats.dropped_at[dropped])


def test_gamma_gamma_mean_order_value() -> None:
    values = GammaGamma(p=4.5, q=3.5, gamma=45.0)
    rng = np.random.Generator(np.random.PCG64(5))
    rate = values.sample_rate(rng, 200_000)
    orders = values.sample_values(rng, rate)
    assert orders.mean() == pytest.approx(values.mean_value, rel=0.03)
