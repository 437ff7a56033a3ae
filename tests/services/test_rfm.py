"""RFM scores computed in the engine equal a numpy reference (NTILE(5) with ties broken by
customer_id), and `{rfm: cell}` segments read them, on both stores."""

from __future__ import annotations

import random
from datetime import datetime

import numpy as np
import pytest
from segment_helpers import day, identify, order, store, strategy

from orbita.engine.rfm import rfm_expr, rfm_from_features, rfm_orders
from orbita.engine.segments.compile import feature_tables
from orbita.engine.segments.features import FeaturePlan
from orbita.engine.segments.tables import segment_tables
from orbita.model.rfm import RfmConfig
from orbita.services.customers import find_customer
from orbita.services.segments import refresh_segments, segment_members
from orbita.services.workspace import Workspace


def ntile5(values: list[tuple[float, int]]) -> dict[int, int]:
    """SQL's NTILE(5) over rows sorted by (value, customer_id): the first N % 5 groups get
    one row more."""
    ordered = sorted(values)
    n = len(ordered)
    base, extra = divmod(n, 5)
    sizes = [base + (1 if i < extra else 0) for i in range(5)]
    scores: dict[int, int] = {}
    index = 0
    for group, size in enumerate(sizes, start=1):
        for _, customer in ordered[index : index + size]:
            scores[customer] = group
        index += size
    return scores


@pytest.mark.parametrize("source", ["events", "features"])
def test_rfm_scores_and_cells_equal_the_numpy_reference(workspace: Workspace, source: str) -> None:
    rng = random.Random(3)
    users = [f"u{i:03d}" for i in range(57)]
    records = [identify(user) for user in users]
    for user in users[:-4]:  # four customers never order
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            # Whole days and a few revenues: ties on every score.
            records.append(order(user, day(rng.randrange(0, 400)), rng.choice([20.0, 50.0, 99.9])))
    store(workspace, *records)  # a repeated (user, day) is one order: the reference reads back
    as_of = day(400)
    config = RfmConfig()
    dialect = "postgres" if workspace.events.backend == "postgres" else "duckdb"
    backend = workspace.events.ibis()
    if source == "events":
        expr = rfm_expr(config, as_of=as_of, tables=segment_tables(dialect))
    else:  # as a refresh scores them: from the per-customer feature table of the orders
        plan = FeaturePlan(prefix="rfm_test_features")
        plan.add_latest(rfm_orders(config))
        for name, table in feature_tables(
            plan, as_of=as_of, tables=segment_tables(dialect)
        ).items():
            backend.create_table(name, table, overwrite=True)
        expr = rfm_from_features(config, plan=plan)
    got = backend.to_pyarrow(expr).to_pylist()

    # The reference: orders in (as_of - 365d, as_of] read back event by event.
    start = as_of - config.window
    per: dict[int, list[tuple[float, float]]] = {}
    for customer, when, revenue in _orders(workspace, users):
        if start < when <= as_of:
            per.setdefault(customer, []).append((when.timestamp(), revenue))
    last = ntile5([(max(t for t, _ in v), c) for c, v in per.items()])
    freq = ntile5([(float(len(v)), c) for c, v in per.items()])
    money = ntile5([(float(np.sum([r for _, r in v])), c) for c, v in per.items()])
    table = config.table()
    want = {c: (last[c], freq[c], money[c], table[(last[c], freq[c], money[c])]) for c in per}
    assert {row["customer_id"]: (row["r"], row["f"], row["m"], row["cell"]) for row in got} == want
    assert len(want) > 30


def _orders(workspace: Workspace, users: list[str]) -> list[tuple[int, datetime, float]]:
    found = []
    for user in users:
        customer = find_customer(workspace=workspace, user_id=user).customer_id
        for event, _ in workspace.events.page(customer_id=customer, limit=100):
            if event.name == "Order Completed":
                found.append((customer, event.timestamp, float(event.properties["revenue"])))
    return found


def test_rfm_cells_are_segments(workspace: Workspace) -> None:
    users = [f"c{i}" for i in range(10)]
    store(workspace, *[identify(u) for u in users])
    for i, user in enumerate(users):
        store(workspace, *[order(user, day(200 + i * 20 - k)) for k in range(i + 1)])
    cells = strategy("segments:\n  best: {rfm: champions}\n  gone: {rfm: lost}\n")
    refresh_segments(workspace=workspace, strategy=cells, as_of=day(400))
    best = {m.user_id for m in segment_members(workspace=workspace, name="best")}
    gone = {m.user_id for m in segment_members(workspace=workspace, name="gone")}
    # c9: the latest and most frequent; c0: the oldest single order.
    assert "c9" in best and "c0" in gone and not best & gone
