"""GDPR erasure removes the customer and everything derived from them, on both backends."""

from __future__ import annotations

from segment_helpers import day, identify, order, store, strategy

from orbita.services.customers import delete_customer, get_customer
from orbita.services.segments import refresh_segments
from orbita.services.workspace import Workspace

BUYERS = strategy(
    """
segments:
  buyers: {event: "Order Completed", count: ">= 1"}
stages:
  - {name: customer, segment: buyers}
"""
)


def test_erasure_takes_memberships_and_stage_history_with_it(workspace: Workspace) -> None:
    store(workspace, identify("ann"), identify("bob"), order("ann", day(1)), order("bob", day(2)))
    refresh_segments(workspace=workspace, strategy=BUYERS, as_of=day(3))

    report = delete_customer(workspace=workspace, user_id="ann")

    # Entered "buyers", entered stage "customer", and their Segment Entered event.
    assert (report.profiles, report.memberships) == (1, 2)
    assert report.events >= 3
    after = refresh_segments(workspace=workspace, strategy=BUYERS, as_of=day(4))
    buyers = next(r for r in after if r.name == "buyers")
    assert (buyers.size, buyers.exited) == (1, 0)  # only bob; ann did not leave, she is gone
    assert get_customer(workspace=workspace, user_id="bob").events_count >= 2


def test_erasure_takes_journey_runs_steps_and_outbox_with_it(workspace: Workspace) -> None:
    from test_journeys_durable import HOUR, T0, ingest, publish, table_counts, track

    from orbita.services.journeys import advance_due

    journeys = publish(workspace)
    ingest(
        workspace,
        journeys,
        [
            track("ann", "Product Added", T0, "add-ann", cart_id="a"),
            track("bob", "Product Added", T0, "add-bob", cart_id="b"),
        ],
    )
    advance_due(workspace=workspace, journeys=journeys, now=T0 + 2 * HOUR)
    before = table_counts(workspace)

    report = delete_customer(workspace=workspace, user_id="ann")

    after = table_counts(workspace)
    removed = {name: before[name] - after[name] for name in before}
    assert removed["journey_runs"] == 1 and removed["outbox"] == 1
    assert report.journey_rows == sum(removed.values())
    assert after["journey_runs"] == 1  # bob's run is untouched


def test_erasure_takes_consents_and_delivery_decisions_but_keeps_suppressions(
    workspace: Workspace,
) -> None:
    from sqlalchemy import func, insert, select

    from orbita.store.state import consents, customers, delivery_attempts, suppressions

    store(workspace, identify("ann"), identify("bob"))
    with workspace.state.begin() as connection:
        ids = dict(connection.execute(select(customers.c.user_id, customers.c.customer_id)).all())
        for user in ("ann", "bob"):
            connection.execute(
                insert(consents).values(
                    customer_id=ids[user], channel="email", topic="marketing", granted=False,
                    source="test", at=day(1),
                )
            )  # fmt: skip
            connection.execute(
                insert(delivery_attempts).values(
                    outbox_id=1, customer_id=ids[user], attempt=1, at=day(1), outcome="skipped",
                    reason="no consent",
                )
            )  # fmt: skip
        connection.execute(
            insert(suppressions).values(
                kind="email", address="ann@example.com", reason="bounce", created_at=day(1)
            )
        )

    report = delete_customer(workspace=workspace, user_id="ann")

    assert report.delivery_rows == 2
    with workspace.state.connect() as connection:
        left = {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (consents, delivery_attempts, suppressions)
        }
    assert left == {"consents": 1, "delivery_attempts": 1, "suppressions": 1}
