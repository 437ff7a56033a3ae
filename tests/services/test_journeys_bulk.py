"""The batch writer's paths on both backends: a decision written again queues nothing twice
(PostgreSQL's COPY falls back to insert-or-ignore), stored values read back as the ORM
wrote them, and a run's state column parses back to the same RunState."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update

from orbita.engine.journeys import RunState
from orbita.model.journeys import parse_journey
from orbita.model.messages import parse_batch
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.workspace import Workspace
from orbita.store.state import journey_runs, journey_steps, outbox

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "trigger": {"event": "Product Added"},
    "holdout": "20%",
    "steps": [{"wait": "1h"}, {"send": "cart_reminder"}, {"wait": "1d"}, {"send": "cart_last"}],
}


def enter(workspace: Workspace, count: int) -> Any:
    journeys = publish_journeys(
        workspace=workspace, journeys={"cart": parse_journey(SPEC, name="cart")}
    ).journeys
    messages = [
        {
            "type": "track",
            "userId": f"c{i}",
            "event": "Product Added",
            "messageId": f"add-{i}",
            # Microseconds and a non-UTC offset: both must survive the state's JSON.
            "timestamp": (T0 + timedelta(seconds=i, microseconds=7)).isoformat(),
            "properties": {"cart_id": f"k{i}", "price": 5},
        }
        for i in range(count)
    ]
    records = parse_batch({"batch": messages}, received_at=T0)
    store_records(workspace=workspace, records=records)
    events = resolve_customers(workspace=workspace, records=records)
    handle_events(workspace=workspace, journeys=journeys, events=events)
    return journeys


def test_a_step_decided_again_queues_its_message_once(workspace: Workspace) -> None:
    journeys = enter(workspace, 40)
    with workspace.state.connect() as connection:
        before = connection.execute(select(journey_runs)).mappings().all()
    advance_due(workspace=workspace, journeys=journeys, now=T0 + timedelta(hours=2), limit=15)
    with workspace.state.connect() as connection:
        keys = connection.execute(select(outbox.c.idempotency_key)).scalars().all()
    assert len(keys) == len(set(keys)) == 40
    # The runs back where they were, as if the batch's commit had been lost after its
    # messages were queued: the same decisions again find their keys taken.
    with workspace.state.begin() as connection:
        for row in before:
            connection.execute(
                update(journey_runs)
                .where(journey_runs.c.run_id == row["run_id"])
                .values({k: v for k, v in row.items() if k != "run_id"})
            )
    report = advance_due(
        workspace=workspace, journeys=journeys, now=T0 + timedelta(hours=2), limit=15
    )
    assert report.claimed == 40
    with workspace.state.connect() as connection:
        again = connection.execute(select(outbox.c.idempotency_key)).scalars().all()
        steps = connection.execute(select(func.count()).select_from(journey_steps)).scalar_one()
    assert sorted(again) == sorted(keys)
    assert steps == 2 * 2 * 40  # each pass: the wait left, the send passed


def test_stored_rows_read_back_as_the_orm_writes_them(workspace: Workspace) -> None:
    journeys = enter(workspace, 10)
    advance_due(workspace=workspace, journeys=journeys, now=T0 + timedelta(hours=2))
    with workspace.state.connect() as connection:
        rows = connection.execute(select(outbox)).mappings().all()
        # JSON None is stored as JSON null (SQLAlchemy's JSON default), not as SQL NULL.
        null_results = connection.execute(
            text("SELECT count(*) FROM outbox WHERE result IS NULL")
        ).scalar_one()
        states = connection.execute(select(journey_runs.c.state)).scalars().all()
        waiting = connection.execute(
            select(journey_runs.c.entered_at, journey_runs.c.wake_at).where(
                journey_runs.c.status == "waiting"
            )
        ).all()
    assert null_results == 0
    assert {row["kind"] for row in rows} == {"send", "suppressed"}
    sends = [row for row in rows if row["kind"] == "send"]
    assert all(row["result"] is None and row["status"] == "queued" for row in sends)
    assert all(row["created_at"].tzinfo is not None for row in rows)
    assert all(
        row["payload"]["properties"]
        == {"cart_id": row["payload"]["properties"]["cart_id"], "price": 5}
        for row in rows
    )
    for data in states:
        state = RunState.from_json(data)
        assert state.entered_at.microsecond == 7
        assert RunState.from_json(state.to_json()) == state
    # Microseconds kept through each backend's time columns.
    assert len(waiting) == 10
    assert all(wake == entered + timedelta(hours=1, days=1) for entered, wake in waiting)


def test_one_worker_on_two_connections_advances_each_run_once(
    postgres_workspace: Workspace,
) -> None:
    workspace = postgres_workspace
    journeys = enter(workspace, 600)
    report = advance_due(
        workspace=workspace,
        journeys=journeys,
        now=T0 + timedelta(hours=2),
        limit=25,
        connections=2,
    )
    assert report.claimed == 600 and report.batches >= 24
    with workspace.state.connect() as connection:
        waits_left = connection.execute(
            select(journey_steps.c.run_id, func.count())
            .where(journey_steps.c.node == "steps.0")
            .group_by(journey_steps.c.run_id)
        ).all()
        keys = connection.execute(select(outbox.c.idempotency_key)).scalars().all()
    assert len(waits_left) == 600 and {count for _, count in waits_left} == {1}
    assert len(keys) == len(set(keys)) == 600
