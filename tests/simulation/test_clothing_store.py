"""The generated clothing store behaves like one: BTYD purchases, abandoned carts, seasons."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from orbita.simulation.calendar import black_friday
from orbita.simulation.clothing import ClothingStore
from orbita.simulation.records import DAY_MS, Chunk

START = datetime(2025, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def store() -> ClothingStore:
    return ClothingStore(seed=3, customers=8000, start=START, days=365)


@pytest.fixture(scope="module")
def chunk(store: ClothingStore) -> Chunk:
    return store.chunk(0)


def _rows(chunk: Chunk, event: str) -> list[int]:
    code = chunk.events.event.vocabulary.index(event)
    return [int(i) for i in np.flatnonzero(chunk.events.event.values == code)]


Orders = dict[int, list[tuple[int, dict[str, Any]]]]


@pytest.fixture(scope="module")
def orders(chunk: Chunk) -> Orders:
    """Each buyer's orders: (timestamp, properties)."""
    found: Orders = defaultdict(list)
    for i in _rows(chunk, "Order Completed"):
        props = chunk.events.properties(i)
        found[int(chunk.events.customer[i])].append((int(chunk.events.timestamp[i]), props))
    return found


def test_same_seed_same_chunk(store: ClothingStore, chunk: Chunk) -> None:
    again = ClothingStore(seed=3, customers=8000, start=START, days=365).chunk(0)
    assert np.array_equal(again.events.timestamp, chunk.events.timestamp)
    assert np.array_equal(again.events.event.values, chunk.events.event.values)
    assert [again.events.row(i) for i in range(0, len(again.events), 997)] == [
        chunk.events.row(i) for i in range(0, len(chunk.events), 997)
    ]
    other = ClothingStore(seed=4, customers=8000, start=START, days=365)
    assert not np.array_equal(other.signups, store.signups)


def test_events_are_in_time_order_and_numbered_per_customer(
    store: ClothingStore, chunk: Chunk
) -> None:
    events = chunk.events
    assert (np.diff(events.timestamp) >= 0).all()
    assert events.timestamp.min() >= store.calendar.start_ms
    assert events.timestamp.max() < store.calendar.end_ms
    by_customer = np.lexsort((events.ordinal, events.customer))
    customers, ordinals = events.customer[by_customer], events.ordinal[by_customer]
    starts = np.concatenate([[True], customers[1:] != customers[:-1]])
    assert (ordinals[starts] == 0).all()
    assert (np.diff(ordinals)[~starts[1:]] == 1).all()
    stamps = events.timestamp[by_customer]
    assert (np.diff(stamps)[~starts[1:]] >= 0).all()


def test_signing_up_ties_anonymous_visits_to_the_customer(chunk: Chunk) -> None:
    events = chunk.events
    signed_up = {
        int(events.customer[i]): int(events.timestamp[i]) for i in _rows(chunk, "Signed Up")
    }
    assert len(signed_up) == len(chunk.customers)
    # The identify's timestamp is the Signed Up event's.
    for customer, stamp in zip(chunk.customers.customer, chunk.customers.signed_up, strict=True):
        assert signed_up[int(customer)] == int(stamp)
    anonymous = ~events.user_id.present()
    assert anonymous.any()
    assert events.anonymous_id.present()[anonymous].all()
    for i in np.flatnonzero(anonymous)[:2000]:
        assert events.timestamp[i] <= signed_up[int(events.customer[i])]
    for i in _rows(chunk, "Signed Up")[:500]:
        assert events.user_id.present()[i] and events.anonymous_id.present()[i]
    # Once signed up, everything is identified.
    later = np.array(
        [events.timestamp[i] > signed_up[int(events.customer[i])] for i in range(len(events))]
    )
    assert events.user_id.present()[later].all()


def test_purchases_follow_the_bgnbd_parameters(
    store: ClothingStore, chunk: Chunk, orders: Orders
) -> None:
    params = store.params
    buyers = len(orders)
    # Buyers: the first-purchase share, less those whose first order would fall after the end.
    assert buyers / len(chunk.customers) == pytest.approx(params.first_purchase_share, abs=0.06)
    op_end = store.calendar.operational_days
    firsts = np.array([min(t for t, _ in found) for found in orders.values()])
    observed = np.array([len(found) - 1 for found in orders.values()], dtype=np.float64)
    horizon = op_end - store.calendar.to_operational(firsts)
    model = params.purchases
    expected = np.array([model.expected_repeats(float(t)) for t in horizon])
    repeaters = np.array([1 - model.p_no_repeat(float(t)) for t in horizon])
    assert observed.mean() == pytest.approx(expected.mean(), rel=0.1)
    assert (observed > 0).mean() == pytest.approx(repeaters.mean(), abs=0.03)


def test_most_carts_are_abandoned_and_some_come_back(chunk: Chunk, orders: Orders) -> None:
    counters = chunk.counters
    abandoned = counters["abandoned_carts"] / counters["carts"]
    assert 0.6 < abandoned < 0.85
    assert counters["recovered_carts"] > 0
    # Recovered carts: the same cart_id was added to in an earlier visit than its order.
    added: dict[str, int] = {}
    for i in _rows(chunk, "Product Added")[::3]:
        cart = chunk.events.properties(i)["cart_id"]
        added.setdefault(cart, int(chunk.events.timestamp[i]))
    ordered = {props["cart_id"]: t for found in orders.values() for t, props in found}
    earlier = [cart for cart, t in ordered.items() if cart in added and t - added[cart] > 3_600_000]
    assert len(earlier) > 0.05 * len(ordered)


def test_orders_add_up(orders: Orders) -> None:
    for found in list(orders.values())[:400]:
        for _, props in found:
            lines = props["products"]
            subtotal = sum(p["price"] * p["quantity"] for p in lines)
            assert props["subtotal"] == pytest.approx(subtotal, abs=0.011)
            assert props["revenue"] == pytest.approx(
                props["subtotal"] - props.get("discount", 0), abs=0.011
            )
            assert props["total"] == pytest.approx(props["revenue"] + props["shipping"], abs=0.011)
            assert all(p["sku"].startswith(p["product_id"]) for p in lines)
            assert props["currency"] == "EUR"


def test_spend_is_heavy_tailed_around_gamma_gamma(store: ClothingStore, orders: Orders) -> None:
    totals = np.array(sorted(sum(p["revenue"] for _, p in found) for found in orders.values()))
    top_tenth = totals[-len(totals) // 10 :].sum() / totals.sum()
    assert top_tenth > 0.3
    values = np.array([p["subtotal"] for found in orders.values() for _, p in found])
    assert values.mean() == pytest.approx(store.params.order_value.mean_value, rel=0.2)


def test_black_friday_is_busier_than_february(store: ClothingStore, orders: Orders) -> None:
    stamps = np.array([t for found in orders.values() for t, _ in found])
    day = (stamps - store.calendar.start_ms) // DAY_MS

    def per_day(first: date, days: int) -> float:
        offset = (first - START.date()).days
        return float(((day >= offset) & (day < offset + days)).sum()) / days

    friday = black_friday(2025)
    assert per_day(friday - timedelta(days=6), 10) > 1.5 * per_day(date(2026, 2, 1), 28)


def test_customers_have_profiles(chunk: Chunk) -> None:
    traits = chunk.customers.traits
    assert traits["email"].present().mean() > 0.9
    assert 0.3 < traits["phone"].present().mean() < 0.8
    assert 0.1 < traits["telegram_chat_id"].present().mean() < 0.4
    zones = {traits["timezone"].vocabulary[int(c)] for c in traits["timezone"].values}
    assert "Europe/Kyiv" in zones and len(zones) > 3
    emails = [traits["email"].python(i) for i in range(len(chunk.customers))]
    present = [e for e in emails if e]
    assert len(set(present)) == len(present)
    assert all("@" in e and e.isascii() for e in present)
