"""Campaign responses reproduce the true uplift the truth file states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from orbita.simulation import CAMPAIGNS, CustomerState, sample_response, state_of
from orbita.simulation.clothing import ClothingStore

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def _state(i: int, *, rate: float = 0.03, engagement: float = 1.0) -> CustomerState:
    return CustomerState(
        user_id=f"u{i:07d}",
        active=True,
        goal_rates={"Order Completed": rate},
        engagement=engagement,
        order_value=80.0,
    )


@pytest.mark.parametrize("kind", ["abandoned_cart", "win_back", "vip"])
def test_uplift_over_a_holdout_is_the_true_uplift(kind: str) -> None:
    spec = CAMPAIGNS["clothing-store"][kind]
    rng = np.random.Generator(np.random.PCG64(1))
    n = 6000
    states = [
        _state(i, rate=float(rng.gamma(2.0, 0.01)), engagement=float(rng.gamma(4.0, 0.25)))
        for i in range(n)
    ]
    treated = [
        sample_response(store="clothing-store", state=s, campaign=kind, seed=9, now=NOW)
        for s in states
    ]
    untreated = [
        sample_response(
            store="clothing-store", state=s, campaign=kind, seed=9, now=NOW, treated=False
        )
        for s in states
    ]
    lift = np.mean([r.converted for r in treated]) - np.mean([r.converted for r in untreated])
    # Paired on the same customers and random numbers: only the extra conversions differ.
    assert lift == pytest.approx(spec.uplift, abs=4 * np.sqrt(spec.uplift / n))
    assert all(r.converted for r, u in zip(treated, untreated, strict=True) if u.converted)
    assert not any(r.opened for r in untreated)
    extra = [r for r in treated if r.incremental]
    assert all(r.opened for r in extra)
    # Clickers are far more likely than other openers to be the extra conversions.
    openers = [r for r in treated if r.opened]
    assert np.mean([r.clicked for r in extra]) > 1.5 * np.mean([r.clicked for r in openers])
    # Independent halves, as a holdout test would see them.
    half = n // 2
    split = np.mean([r.converted for r in treated[:half]]) - np.mean(
        [r.converted for r in untreated[half:]]
    )
    assert split == pytest.approx(spec.uplift, abs=0.035)


def test_open_and_click_rates_follow_the_campaign() -> None:
    spec = CAMPAIGNS["clothing-store"]["browse_abandonment"]
    responses = [
        sample_response(
            store="clothing-store", state=_state(i), campaign="browse_abandonment", seed=2, now=NOW
        )
        for i in range(5000)
    ]
    opened = np.array([r.opened for r in responses])
    clicked = np.array([r.clicked for r in responses])
    assert opened.mean() == pytest.approx(spec.open_rate, abs=0.025)
    assert clicked[opened].mean() == pytest.approx(spec.click_rate, abs=0.03)
    for r in responses[:500]:
        if r.converted:
            assert r.converted_at is not None
            assert NOW <= r.converted_at <= NOW + timedelta(days=spec.window_days)
        if r.clicked:
            assert r.opened_at is not None and r.clicked_at is not None
            assert NOW < r.opened_at <= r.clicked_at


def test_responses_are_reproducible_and_depend_on_the_seed() -> None:
    state = _state(7, rate=0.2)
    first = sample_response(store="clothing-store", state=state, campaign="vip", seed=1, now=NOW)
    again = sample_response(store="clothing-store", state=state, campaign="vip", seed=1, now=NOW)
    assert first == again
    outcomes = {
        sample_response(
            store="clothing-store", state=state, campaign="vip", seed=seed, now=NOW
        ).opened_at
        for seed in range(20)
    }
    assert len(outcomes) > 1
    with pytest.raises(ValueError, match="aware"):
        sample_response(
            store="clothing-store",
            state=state,
            campaign="vip",
            seed=1,
            now=NOW.replace(tzinfo=None),
        )


def test_lapsed_customers_convert_only_when_won_back() -> None:
    lapsed = CustomerState(user_id="u0000001", active=False, goal_rates={"Order Completed": 0.05})
    responses = [
        sample_response(
            store="clothing-store",
            state=CustomerState(user_id=f"u{i:07d}", active=False, goal_rates=lapsed.goal_rates),
            campaign="win_back",
            seed=3,
            now=NOW,
        )
        for i in range(3000)
    ]
    assert all(r.incremental for r in responses if r.converted)
    assert responses[0].baseline_probability == 0.0


def test_bank_campaigns_and_states_from_a_generated_chunk() -> None:
    store = ClothingStore(seed=1, customers=300, start=NOW - timedelta(days=90), days=90)
    latent = store.chunk(0).latent
    end = NOW
    state = state_of(latent, 0, now=end)
    assert state.user_id == "u0000001"
    assert "Order Completed" in state.goal_rates
    response = sample_response(
        store="bank",
        state=CustomerState(user_id="u0000002", active=True, goal_rates={"Card Activated": 0.3}),
        campaign="activation_nudge",
        seed=4,
        now=end,
        channel="sms",
    )
    assert response.baseline_probability == pytest.approx(1 - np.exp(-0.3 * 7))
    assert set(CAMPAIGNS["bank"]) >= {"activation_nudge", "cross_sell_offer", "win_back"}
