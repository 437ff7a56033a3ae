"""Every scenario file of the engine played through `run_until` on the real stores: events
stored and played window by window, schedule and date triggers fired by the scheduler,
segment conditions answered from refreshed memberships. The rows must say what the
in-memory runner (tests/engine/journeys/runner.py) says."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from test_journeys_scenarios import (
    SCENARIOS,
    assert_as_expected,
    message,
    moment,
    recorded_lines,
)

from orbita.core.clock import SimulatedClock
from orbita.core.errors import UserError
from orbita.model.events import EventRecord
from orbita.model.strategy import parse_strategy
from orbita.model.triggers import SEGMENT_ENTERED_EVENT, SEGMENT_EXITED_EVENT
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    CustomerEvent,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.runner import run_until
from orbita.services.workspace import Workspace

PLAYED = sorted(path.stem for path in SCENARIOS.glob("*.yaml"))


def _records(items: list[tuple[int, dict[str, Any]]]) -> Iterator[EventRecord]:
    for number, item in items:
        at, user = moment(item["at"]), str(item["customer"])
        if "identify" in item:
            yield message("identify", user, at, f"m{number}", traits=item["identify"])
        elif "event" in item:
            props = item.get("properties", {})
            yield message("track", user, at, f"m{number}", event=item["event"], properties=props)
        else:
            entered = "segment_entered" in item
            segment = item["segment_entered" if entered else "segment_exited"]
            name = SEGMENT_ENTERED_EVENT if entered else SEGMENT_EXITED_EVENT
            yield message(
                "track", user, at, f"m{number}", event=name, properties={"segment": segment}
            )


def _segments(data: dict[str, Any]) -> dict[str, Any]:
    """The scenario's segments, and a stand-in (that nobody is in) for each segment whose
    entries and exits the timeline plays as events rather than by refreshing."""
    segments = dict(data.get("segments") or {})
    for item in data["timeline"]:
        for key in ("segment_entered", "segment_exited"):
            if key in item and item[key] not in segments:
                segments[item[key]] = {"trait": f"stand_in_{item[key]}", "eq": True}
    return segments


def _channels(value: object) -> set[str]:
    if isinstance(value, dict):
        found = {value["channel"]} if isinstance(value.get("channel"), str) else set()
        return found.union(*(_channels(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_channels(v) for v in value))
    return set()


def play(workspace: Workspace, data: dict[str, Any]) -> list[dict[str, Any]]:
    start = moment(data["start"])
    workspace.clock = SimulatedClock(start)
    source = {
        "workspace": "scenario",
        "timezone": data.get("timezone", "UTC"),
        "segments": _segments(data),
        "journeys": data["journeys"],
        # The channels the scenario's sends name; delivery is not what these tests check.
        "channels": {name: {"type": "webhook"} for name in _channels(data["journeys"])},
    }
    strategy = parse_strategy(yaml.safe_dump(source), source="scenario")
    journeys = publish_journeys(
        workspace=workspace, journeys=strategy.journeys, timezone=strategy.timezone
    ).journeys
    specs = {int(cid): spec or {} for cid, spec in (data.get("customers") or {}).items()}
    named = [int(i["customer"]) for i in data["timeline"] if "customer" in i]
    # Customers are made in number order from 1, so their ids (and holdout buckets) match.
    profiles = [
        message(
            "identify",
            str(cid),
            start,
            f"profile-{cid}",
            traits=dict(specs.get(cid, {}).get("traits") or {}),
            context={"timezone": specs[cid]["timezone"]}
            if specs.get(cid, {}).get("timezone")
            else {},
        )
        for cid in range(1, max([*specs, *named]) + 1)
    ]
    store_records(workspace=workspace, records=profiles)
    clock = start
    pending: list[tuple[int, dict[str, Any]]] = []

    def run_to(moment_: datetime) -> None:
        nonlocal clock, pending
        run_until(
            workspace=workspace,
            strategy=strategy,
            journeys=journeys,
            start=clock,
            until=moment_,
            events=_records(pending),
            step=timedelta(hours=1),
            refresh_every=timedelta(days=1),
        )
        clock, pending = moment_, []

    for number, item in enumerate(data["timeline"]):
        if "until" in item:
            run_to(moment(item["until"]))
        elif "api" in item:
            at = moment(item["at"])
            run_to(at)
            record = message(
                "track",
                str(item["customer"]),
                at,
                f"m{number}",
                event="API Trigger",
                properties=item.get("properties", {}),
            )
            (resolved,) = resolve_customers(workspace=workspace, records=[record])
            entry = CustomerEvent(resolved.customer_id, record, journey=item["api"])
            handle_events(workspace=workspace, journeys=journeys, events=[entry])
        else:
            pending.append((number, item))
    last = max((moment(i.get("until") or i["at"]) for i in data["timeline"]), default=start)
    if pending:
        run_to(last + timedelta(seconds=1))
    return recorded_lines(workspace)


@pytest.mark.parametrize("name", PLAYED)
def test_scenario_through_run_until(workspace: Workspace, name: str) -> None:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    assert_as_expected(data, play(workspace, data))


def test_run_until_refuses_going_back(workspace: Workspace) -> None:
    start = moment("2025-03-03T08:00:00+00:00")
    workspace.clock = SimulatedClock(start)
    strategy = parse_strategy("workspace: w\n", source="inline")
    journeys = publish_journeys(workspace=workspace, journeys={}).journeys
    with pytest.raises(UserError, match="before the clock"):
        run_until(
            workspace=workspace,
            strategy=strategy,
            journeys=journeys,
            start=start,
            until=start - timedelta(days=1),
        )


def test_journey_stats_count_runs_and_conversions_per_variant(workspace: Workspace) -> None:
    from orbita.services.journey_stats import ArmStats, journey_stats

    data = yaml.safe_load((SCENARIOS / "split_and_birthday.yaml").read_text())
    play(workspace, data)

    stats = journey_stats(workspace=workspace, name="birthday_offer")

    # Customer 2 got variant A on two birthdays, customer 4 variant B (see the scenario).
    assert stats.variants == {"A": ArmStats(2, 0), "B": ArmStats(2, 0)}
    assert stats.sent == 4 and stats.arms["treatment"].entered == 4


def test_run_until_credits_goal_events_to_the_messages_and_holdout_before_them(
    workspace: Workspace,
) -> None:
    from sqlalchemy import select

    from orbita.store.state import attributions

    data = yaml.safe_load((SCENARIOS / "holdout.yaml").read_text())
    play(workspace, data)

    with workspace.state.connect() as connection:
        rows = connection.execute(select(attributions)).mappings().all()

    # Customer 3 (the control arm) ordered within the goal window: credited to the holdout.
    # Customer 1's reminder was only queued (no sender ran), so no message reached them.
    assert [(r["customer_id"], r["arm"], r["journey"], r["weight"]) for r in rows] == [
        (3, "holdout", "cart_holdout", 1.0)
    ]
    assert rows[0]["converted_at"] == datetime(2025, 3, 5, 9, tzinfo=UTC)
