"""Campaign responses reproduce the true uplift the truth file states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from orbita.simulation import CAMPAIGNS, CustomerState, sample_response, state_of
from orbita.simulation.clothing import ClothingStore
from orbita.simulation.response import Responses, sample_responses

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def _batch(
    kind: str,
    n: int,
    *,
    store: str = "clothing-store",
    treated: bool | np.ndarray = True,
    seed: int = 9,
    active: bool = True,
    first: int = 0,
) -> Responses:
    rng = np.random.Generator(np.random.PCG64(1))
    return sample_responses(
        store=store,
        campaign=kind,
        seed=seed,
        now=NOW,
        user_ids=[f"u{i:07d}" for i in range(first, first + n)],
        active=np.full(n, active),
        goal_rate=rng.gamma(2.0, 0.01, n),
        engagement=rng.gamma(4.0, 0.25, n),
        order_value=np.full(n, 80.0),
        treated=treated,
    )


@pytest.mark.parametrize(
    ("store", "kind"), [(store, kind) for store in CAMPAIGNS for kind in sorted(CAMPAIGNS[store])]
)
def test_uplift_over_a_holdout_is_the_true_uplift(store: str, kind: str) -> None:
    spec = CAMPAIGNS[store][kind]
    n = 30_000
    treated = _batch(kind, n, store=store)
    untreated = _batch(kind, n, store=store, treated=False)
    lift = treated.converted.mean() - untreated.converted.mean()
    # Paired on the same customers and random numbers: only the extra conversions differ.
    assert lift == pytest.approx(spec.uplift, abs=4 * np.sqrt(spec.uplift / n))
    assert (treated.converted | ~untreated.converted).all()
    assert not untreated.opened.any()
    assert treated.opened[treated.incremental].all()
    # Clickers are far more likely than other openers to be the extra conversions.
    assert (
        treated.clicked[treated.incremental].mean() > 1.5 * treated.clicked[treated.opened].mean()
    )
    # Random halves, as a holdout test sees them: treated customers vs other customers.
    half = np.arange(n) % 2 == 0
    mixed = _batch(kind, n, store=store, treated=half)
    split = mixed.converted[half].mean() - mixed.converted[~half].mean()
    assert split == pytest.approx(spec.uplift, abs=0.02)
    assert treated.treated_probability.mean() - treated.baseline_probability.mean() == (
        pytest.approx(spec.uplift, rel=0.05)
    )


def test_open_and_click_rates_follow_the_campaign() -> None:
    spec = CAMPAIGNS["clothing-store"]["browse_abandonment"]
    n = 20_000
    batch = sample_responses(
        store="clothing-store",
        campaign="browse_abandonment",
        seed=2,
        now=NOW,
        user_ids=[f"u{i:07d}" for i in range(n)],
        active=np.ones(n, dtype=np.bool_),
        goal_rate=np.full(n, 0.03),
        engagement=np.ones(n),
        order_value=np.full(n, 60.0),
    )
    assert batch.opened.mean() == pytest.approx(spec.open_rate, abs=0.015)
    assert batch.clicked[batch.opened].mean() == pytest.approx(spec.click_rate, abs=0.02)
    now_ms = NOW.timestamp() * 1000
    window_ms = spec.window_days * 86_400_000
    at = batch.converted_at[batch.converted]
    assert (at >= now_ms).all() and (at <= now_ms + window_ms).all()
    assert (batch.converted_at[~batch.converted] == -1).all()
    assert (batch.opened_at[batch.opened] > now_ms).all()
    assert (batch.clicked_at[batch.clicked] >= batch.opened_at[batch.clicked]).all()
    assert batch.value[batch.converted].mean() == pytest.approx(60.0, rel=0.05)


def test_one_customer_at_a_time_gives_the_batch_answers() -> None:
    n = 300
    rng = np.random.Generator(np.random.PCG64(3))
    engagement = rng.gamma(4.0, 0.25, n)
    batch = sample_responses(
        store="clothing-store",
        campaign="vip",
        seed=4,
        now=NOW,
        user_ids=[f"u{i:07d}" for i in range(n)],
        active=np.ones(n, dtype=np.bool_),
        goal_rate=np.full(n, 0.05),
        engagement=engagement,
        order_value=np.full(n, 120.0),
    )
    for i in range(n):
        state = CustomerState(
            user_id=f"u{i:07d}",
            active=True,
            goal_rates={"Order Completed": 0.05},
            engagement=float(engagement[i]),
            order_value=120.0,
        )
        one = sample_response(store="clothing-store", state=state, campaign="vip", seed=4, now=NOW)
        assert one.opened == batch.opened[i] and one.clicked == batch.clicked[i]
        assert one.converted == batch.converted[i] and one.value == batch.value[i]
        if one.converted_at is not None:
            assert one.converted_at.timestamp() * 1000 == pytest.approx(batch.converted_at[i])


def test_responses_are_reproducible_and_depend_on_the_seed() -> None:
    state = CustomerState(user_id="u0000007", active=True, goal_rates={"Order Completed": 0.2})
    first = sample_response(store="clothing-store", state=state, campaign="vip", seed=1, now=NOW)
    again = sample_response(store="clothing-store", state=state, campaign="vip", seed=1, now=NOW)
    assert first == again
    assert first.converted_at is None or first.converted_at.tzinfo is not None
    seeds = _batch("vip", 2000, seed=1).opened != _batch("vip", 2000, seed=2).opened
    assert seeds.any()
    later = sample_responses(
        store="clothing-store",
        campaign="vip",
        seed=1,
        now=NOW + timedelta(days=1),
        user_ids=["u0000007"] * 1,
        active=np.ones(1, dtype=np.bool_),
        goal_rate=np.full(1, 0.2),
        engagement=np.ones(1),
        order_value=np.zeros(1),
    )
    assert later.opened_at[0] != (first.opened_at.timestamp() * 1000 if first.opened_at else -1)
    with pytest.raises(ValueError, match="aware"):
        sample_response(
            store="clothing-store",
            state=state,
            campaign="vip",
            seed=1,
            now=NOW.replace(tzinfo=None),
        )


def test_lapsed_customers_convert_only_when_won_back() -> None:
    batch = _batch("win_back", 20_000, active=False)
    assert batch.converted.any()
    assert (batch.incremental == batch.converted).all()
    assert (batch.baseline_probability == 0).all()


def test_states_from_a_generated_chunk_and_bank_campaigns() -> None:
    store = ClothingStore(seed=1, customers=300, start=NOW - timedelta(days=90), days=90)
    state = state_of(store.chunk(0).latent, 0, now=NOW)
    assert state.user_id == "u0000001"
    assert "Order Completed" in state.goal_rates
    response = sample_response(
        store="bank",
        state=CustomerState(user_id="u0000002", active=True, goal_rates={"Card Activated": 0.3}),
        campaign="activation_nudge",
        seed=4,
        now=NOW,
        channel="sms",
    )
    assert response.baseline_probability == pytest.approx(1 - np.exp(-0.3 * 7))
    assert set(CAMPAIGNS["bank"]) >= {"activation_nudge", "cross_sell_offer", "win_back"}
