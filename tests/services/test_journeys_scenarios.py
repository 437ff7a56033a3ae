"""The engine's scenario files played through the durable services on both backends: real
events through `store_records`, a clock that jumps from event to event, and the rows
(outbox, runs, conversions) read back must say what the in-memory runner says.

Only scenarios whose triggers and conditions the services answer today run here
(schedule, date and API triggers, segment events and event-aggregate branches — as in
welcome_series and bank_onboarding — come next).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

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
from orbita.store.state import journey_conversions, journey_runs, outbox

SCENARIOS = Path(__file__).parents[1] / "engine" / "journeys" / "scenarios"
SUPPORTED = [
    "abandoned_cart",
    "browse_abandonment",
    "keyed_runs",
    "local_time_dst",
    "repeat_purchase",
]
# What the rows record; the runner also notes refusals and trait updates.
RECORDED = ("send", "suppressed", "webhook", "exit", "convert")
JUST_BEFORE = timedelta(microseconds=1)


def moment(value: object) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    assert parsed.tzinfo is not None
    return parsed.astimezone(UTC)


def minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def message(kind: str, user: str, at: datetime, message_id: str, **fields: Any) -> Any:
    body = {"type": kind, "userId": user, "messageId": message_id, "timestamp": at.isoformat()}
    return parse_batch({"batch": [{**body, **fields}]}, received_at=at)[0]


def play(workspace: Workspace, data: dict[str, Any]) -> list[dict[str, Any]]:
    journeys = publish_journeys(
        workspace=workspace,
        journeys={name: parse_journey(spec, name=name) for name, spec in data["journeys"].items()},
        timezone=data.get("timezone", "UTC"),
    ).journeys
    start = moment(data["start"])
    # Customers are made in scenario order, so their ids (and holdout buckets) match.
    profiles = [
        message(
            "identify",
            str(cid),
            start,
            f"profile-{cid}",
            traits=dict(spec.get("traits") or {}),
            context={"timezone": spec["timezone"]} if spec.get("timezone") else {},
        )
        for cid, spec in sorted((data.get("customers") or {}).items())
    ]
    store_records(workspace=workspace, records=profiles)
    resolved = resolve_customers(workspace=workspace, records=profiles)
    assert [e.customer_id for e in resolved] == [int(r.user_id or 0) for r in profiles]
    for number, item in enumerate(data["timeline"]):
        if "until" in item:
            advance_due(workspace=workspace, journeys=journeys, now=moment(item["until"]))
            continue
        at = moment(item["at"])
        advance_due(workspace=workspace, journeys=journeys, now=at - JUST_BEFORE)
        user = str(item["customer"])
        if "identify" in item:
            record = message("identify", user, at, f"m{number}", traits=item["identify"])
            store_records(workspace=workspace, records=[record])
            continue
        record = message(
            "track",
            user,
            at,
            f"m{number}",
            event=item["event"],
            properties=item.get("properties", {}),
        )
        store_records(workspace=workspace, records=[record])
        events = resolve_customers(workspace=workspace, records=[record])
        handle_events(workspace=workspace, journeys=journeys, events=events)
    return recorded_lines(workspace)


def recorded_lines(workspace: Workspace) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    with workspace.state.connect() as connection:
        for row in connection.execute(select(outbox)):
            line: dict[str, Any] = {"at": row.created_at, "customer": row.customer_id}
            line["journey"] = row.journey
            if row.kind == "send":
                line["send"] = row.template
                if row.channel:
                    line["channel"] = row.channel
                if row.variant:
                    line["variant"] = row.variant
            elif row.kind == "webhook":
                line["webhook"] = row.payload["url"]
            else:
                line["suppressed"] = row.template or "webhook"
                line["reason"] = row.result["reason"]
            lines.append(line)
        for row in connection.execute(select(journey_runs)):
            if row.status in ("completed", "exited"):
                ended = datetime.fromisoformat(row.state["ended_at"])
                lines.append(
                    {"at": ended, "customer": row.customer_id, "journey": row.journey}
                    | {"exit": row.exit_reason}
                )
        for row in connection.execute(select(journey_conversions)):
            lines.append(
                {"at": row.at, "customer": row.customer_id, "journey": row.journey, "convert": True}
            )
    return lines


def comparable(lines: list[dict[str, Any]], *, single: bool) -> list[str]:
    result = []
    for line in lines:
        if not any(key in line for key in RECORDED):
            continue
        shown = {**line, "at": minute(moment(line["at"]))}
        if single:
            shown.pop("journey", None)
        result.append(", ".join(f"{key}: {shown[key]}" for key in sorted(shown)))
    return sorted(result)


def assert_as_expected(data: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """The rows' lines equal the scenario's `expect` (times to the minute)."""
    single = len(data["journeys"]) == 1
    actual = comparable(lines, single=single)
    expected = comparable([dict(line) for line in data.get("expect") or []], single=single)
    assert actual == expected, (
        "\nexpected:\n  " + "\n  ".join(expected) + "\ngot:\n  " + ("\n  ".join(actual))
    )


@pytest.mark.parametrize("name", SUPPORTED)
def test_scenario_rows_match_the_engine_runner(workspace: Workspace, name: str) -> None:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    assert_as_expected(data, play(workspace, data))
