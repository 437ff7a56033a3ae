"""The generated bank: credit scores gate approvals, cards wait for activation, then spend."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from orbita.simulation.bank import Bank
from orbita.simulation.records import Chunk


@pytest.fixture(scope="module")
def bank() -> Bank:
    return Bank(seed=8, customers=6000, start=datetime(2025, 11, 1, tzinfo=UTC), days=365)


@pytest.fixture(scope="module")
def chunk(bank: Bank) -> Chunk:
    return bank.chunk(0)


def _rows(chunk: Chunk, event: str) -> np.ndarray:
    code = chunk.events.event.vocabulary.index(event)
    return np.flatnonzero(chunk.events.event.values == code)


def test_refusals_come_with_low_credit_scores(chunk: Chunk) -> None:
    events = chunk.events
    decisions = [
        (events.properties(int(i))["credit_score"], False, events.properties(int(i))["reason"])
        for i in _rows(chunk, "Application Refused")
    ] + [
        (events.properties(int(i))["credit_score"], True, None)
        for i in _rows(chunk, "Application Approved")
    ]
    scores = np.array([s for s, _, _ in decisions])
    approved = np.array([a for _, a, _ in decisions])
    low, high = scores < 600, scores >= 720
    assert (~approved[low]).mean() > 0.5
    assert (~approved[high]).mean() < 0.15
    assert scores[~approved].mean() < scores[approved].mean() - 40
    reasons = [r for s, a, r in decisions if not a and s < 600]
    assert reasons.count("low_credit_score") / len(reasons) > 0.7


def test_applications_are_decided_after_they_are_submitted(chunk: Chunk) -> None:
    events = chunk.events
    submitted = {
        events.properties(int(i))["application_id"]: int(events.timestamp[i])
        for i in _rows(chunk, "Application Submitted")
    }
    for event in ("Application Approved", "Application Refused"):
        for i in _rows(chunk, event)[:500]:
            app = events.properties(int(i))["application_id"]
            assert app in submitted and submitted[app] < events.timestamp[i]


def test_cards_are_activated_before_they_are_used(chunk: Chunk) -> None:
    events = chunk.events
    activated: dict[str, int] = {}
    for i in _rows(chunk, "Card Activated"):
        activated[events.properties(int(i))["account_id"]] = int(events.timestamp[i])
    opened = {events.properties(int(i))["account_id"] for i in _rows(chunk, "Product Opened")}
    assert set(activated) <= opened
    payments = _rows(chunk, "Transaction Completed")
    assert len(payments) > 10 * len(activated)
    for i in payments[::50]:
        props = events.properties(int(i))
        assert props["account_id"] in activated
        assert activated[props["account_id"]] < events.timestamp[i]
        assert props["amount"] > 0 and props["currency"] == "EUR"
    # Not every card gets activated: that is what the activation nudge is for.
    cards = [
        i for i in _rows(chunk, "Product Opened") if events.properties(int(i))["product"] == "card"
    ]
    assert 0.5 < len(activated) / len(cards) < 0.95


def test_profiles_hold_scores_products_and_refusals(chunk: Chunk) -> None:
    traits = chunk.customers.traits
    scores = traits["credit_score"].values
    assert scores.min() >= 300 and scores.max() <= 850
    held = [traits["products_held"].python(i) for i in range(len(chunk.customers))]
    assert sum(1 for h in held if h and "card" in h) > 0.3 * len(held)
    refused = traits["last_refusal_at"].present()
    assert 0.05 < refused.mean() < 0.5
    # Customers refused at least once have lower scores.
    assert scores[refused].mean() < scores[~refused].mean()


def test_event_volume_is_in_the_expected_range(chunk: Chunk) -> None:
    per_customer = len(chunk.events) / len(chunk.customers)
    assert 25 < per_customer < 100
