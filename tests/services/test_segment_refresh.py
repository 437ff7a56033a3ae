"""Segment refresh on both stores: entries and exits over a moving as_of, history kept,
idempotent re-runs, Segment Entered / Exited stored once, stages by first match."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import ibis
import pyarrow as pa
import pytest
from segment_helpers import day, identify, order, record, store, strategy
from sqlalchemy import func, select

from orbita.core.errors import NotFoundError, UserError
from orbita.model.strategy import parse_strategy
from orbita.services.customers import find_customer
from orbita.services.lifecycle import stage_sizes, transition_matrix
from orbita.services.segments import (
    list_segments,
    preview_segment,
    refresh_segments,
    segment_members,
    sync_customer_snapshot,
)
from orbita.services.workspace import Workspace
from orbita.store.state import segment_memberships, segment_refreshes, stage_history

CLOTHING = Path(__file__).parents[1] / "fixtures" / "clothing_segments.yaml"
RECENT = strategy(
    """
segments:
  recent_buyers: {event: "Order Completed", within: 7d}
  big_recent:
    all:
      - {segment: recent_buyers}
      - {event: "Order Completed", within: 7d, sum: {revenue: ">= 100"}}
"""
)


def members(workspace: Workspace, name: str) -> set[str]:
    return {m.user_id or "" for m in segment_members(workspace=workspace, name=name)}


def events_named(workspace: Workspace, name: str) -> int:
    return workspace.events.counts_by_name().get(name, 0)


def refresh_rows(workspace: Workspace) -> int:
    with workspace.state.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(segment_refreshes)).scalar_one()
        )


def stays(workspace: Workspace, user: str, segment: str) -> list[tuple[int, int | None]]:
    """(entered day, exited day) of each stay, in order."""
    customer = find_customer(workspace=workspace, user_id=user).customer_id
    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(segment_memberships.c.entered_at, segment_memberships.c.exited_at)
            .where(
                segment_memberships.c.customer_id == customer,
                segment_memberships.c.segment == segment,
            )
            .order_by(segment_memberships.c.entered_at)
        ).all()
    return [
        ((entered - day(0)).days, None if exited is None else (exited - day(0)).days)
        for entered, exited in rows
    ]


def test_enter_stay_exit_and_re_enter_over_a_moving_as_of(workspace: Workspace) -> None:
    store(
        workspace,
        identify("ann"),
        identify("bob"),
        identify("cat"),
        order("ann", day(1), 120.0),
        order("bob", day(5)),
        order("ann", day(12)),
    )
    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2))
    assert members(workspace, "recent_buyers") == {"ann"}
    assert members(workspace, "big_recent") == {"ann"}

    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(6))  # ann stays, bob in
    assert members(workspace, "recent_buyers") == {"ann", "bob"}

    reports = refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(9))  # ann out
    by_name = {r.name: r for r in reports}
    assert (by_name["recent_buyers"].entered, by_name["recent_buyers"].exited) == (0, 1)
    assert members(workspace, "recent_buyers") == {"bob"}
    assert members(workspace, "big_recent") == set()

    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(13))  # ann back, bob out
    assert members(workspace, "recent_buyers") == {"ann"}
    assert stays(workspace, "ann", "recent_buyers") == [(2, 9), (13, None)]
    assert stays(workspace, "bob", "recent_buyers") == [(6, 13)]
    assert stays(workspace, "cat", "recent_buyers") == []
    # big_recent needs 100 in 7 days: ann's second order is 50.
    assert stays(workspace, "ann", "big_recent") == [(2, 9)]

    assert events_named(workspace, "Segment Entered") == 4  # ann, ann, bob + big_recent ann
    assert events_named(workspace, "Segment Exited") == 3


def test_a_re_run_writes_nothing_and_emits_nothing_twice(workspace: Workspace) -> None:
    store(workspace, identify("ann"), order("ann", day(1)))
    first = refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2))
    assert all(r.changed for r in first)
    rows, entered = refresh_rows(workspace), events_named(workspace, "Segment Entered")

    again = refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2))
    later = refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(3))
    assert not any(r.changed for r in again + later)
    assert refresh_rows(workspace) == rows
    assert events_named(workspace, "Segment Entered") == entered == 1


def test_a_changed_definition_is_recorded_even_with_the_same_members(
    workspace: Workspace,
) -> None:
    store(workspace, identify("ann"), order("ann", day(1)))
    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2), names=["recent_buyers"])
    wider = strategy('segments:\n  recent_buyers: {event: "Order Completed", within: 8d}\n')
    assert list_segments(workspace=workspace, strategy=wider)[0].definition_changed
    (report,) = refresh_segments(workspace=workspace, strategy=wider, as_of=day(2))
    assert report.changed and (report.entered, report.exited) == (0, 0)
    assert not list_segments(workspace=workspace, strategy=wider)[0].definition_changed


def test_refresh_refuses_to_go_back_and_names_unknown_segments(workspace: Workspace) -> None:
    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(5))
    with pytest.raises(UserError, match="cannot go back"):
        refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(4))
    with pytest.raises(NotFoundError, match="unknown segment 'nope'"):
        refresh_segments(workspace=workspace, strategy=RECENT, names=["nope"])


def test_inline_and_materialised_references_agree(workspace: Workspace) -> None:
    store(workspace, identify("ann"), identify("bob"), order("ann", day(1), 150.0))
    store(workspace, order("bob", day(1), 20.0))
    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2), inline_references=True)
    assert members(workspace, "big_recent") == {"ann"}
    preview = preview_segment(workspace=workspace, strategy=RECENT, name="big_recent", as_of=day(2))
    assert preview.size == 1 and [m.user_id for m in preview.sample] == ["ann"]


def test_a_lost_analytic_copy_is_rebuilt_from_the_record(workspace: Workspace) -> None:
    store(workspace, identify("ann"), order("ann", day(1)))
    refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(2))
    workspace.events.replace_members(key="recent_buyers", members=pa.array([], pa.int64()))
    reports = refresh_segments(workspace=workspace, strategy=RECENT, as_of=day(3))
    assert not any(r.changed for r in reports)  # no phantom re-entry
    assert events_named(workspace, "Segment Entered") == 1  # entered once, at day 2


STAGES = strategy(
    """
segments:
  buyers: {event: "Order Completed"}
  recent: {event: "Order Completed", within: 30d}
stages:
  - {name: active, segment: recent}
  - name: lapsed
    segment: {segment: buyers}
  - name: prospect
    segment: {not: {segment: buyers}}
"""
)


def test_stages_first_match_wins_and_the_transition_matrix_counts_moves(
    workspace: Workspace,
) -> None:
    store(
        workspace,
        identify("ann"),
        identify("bob"),
        identify("cat"),
        order("ann", day(1)),
        order("bob", day(20)),
    )
    refresh_segments(workspace=workspace, strategy=STAGES, as_of=day(10))
    # ann: recent and a buyer -> active (first match), bob and cat: prospects.
    assert {s.stage: s.customers for s in stage_sizes(workspace=workspace, strategy=STAGES)} == {
        "active": 1,
        "lapsed": 0,
        "prospect": 2,
    }
    refresh_segments(workspace=workspace, strategy=STAGES, as_of=day(40))
    # ann lapsed (last order 39 days ago), bob active, cat still a prospect.
    matrix = transition_matrix(workspace=workspace, start=day(10), end=day(40))
    assert matrix.count("active", "lapsed") == 1
    assert matrix.count("prospect", "active") == 1
    assert matrix.count("prospect", "prospect") == 1
    assert sum(t.customers for t in matrix.transitions) == 3
    before = transition_matrix(workspace=workspace, start=day(0), end=day(10))
    assert before.count("", "prospect") == 2 and before.count("", "active") == 1
    with workspace.state.connect() as connection:
        open_rows = connection.execute(
            select(func.count())
            .select_from(stage_history)
            .where(stage_history.c.exited_at.is_(None))
        ).scalar_one()
    assert open_rows == 3  # one current stage per customer


def snapshot(workspace: Workspace) -> dict[str, str | None]:
    """user id ("" for an anonymous profile) -> country, as the event store's customers
    snapshot holds them."""
    table = ibis.table({"user_id": "string", "traits": "json"}, name="customers")
    text_form = table.select("user_id", traits=table.traits.cast("string"))
    rows = workspace.events.ibis().to_pyarrow(text_form).to_pylist()
    return {row["user_id"] or "": json.loads(row["traits"]).get("country") for row in rows}


def test_the_scheduled_snapshot_copies_only_changed_new_and_gone_profiles(
    workspace: Workspace,
) -> None:
    anonymous_view = replace(record("", "Product Viewed", day(1)), user_id=None, anonymous_id="x")
    store(
        workspace,
        identify("ann", country="UA"),
        identify("bob", country="PL"),
        identify("cid", country="DE"),
        anonymous_view,
    )
    assert sync_customer_snapshot(workspace=workspace) == 4  # the first copy is full
    # Nothing changed: only the profile with events in the last SNAPSHOT_LAG is read again.
    assert sync_customer_snapshot(workspace=workspace, full=False) == 1
    ann_moved = record("ann", None, day(2), kind="identify", properties={"country": "PL"})
    # "x" turns out to be bob: the anonymous profile is merged into bob's and is gone.
    bob_was_x = replace(record("bob", None, day(3), kind="identify"), anonymous_id="x")
    store(workspace, ann_moved, identify("dan", at=day(2), country="UA"), bob_was_x)
    assert sync_customer_snapshot(workspace=workspace, full=False) == 3  # ann, dan, bob
    expected = {"ann": "PL", "bob": "PL", "cid": "DE", "dan": "UA"}
    assert snapshot(workspace) == expected
    sync_customer_snapshot(workspace=workspace)
    assert snapshot(workspace) == expected


def test_one_query_over_event_features_finds_what_one_query_per_segment_found(
    workspace: Workspace,
) -> None:
    """The clothing store's segments, RFM and stages refreshed the per-segment way (features
    off), then again at the same moment over the feature tables in one query: no change."""
    clothing = parse_strategy(CLOTHING.read_text(), source=str(CLOTHING))
    rng = random.Random(5)
    records = []
    for i in range(60):
        user = f"u{i}"
        records.append(identify(user, country=rng.choice(["UA", "PL", "DE"])))
        for n in range(rng.choice([0, 1, 2, 4, 7])):
            at = day(rng.uniform(0, 400))
            records.append(order(user, at, rng.choice([30.0, 160.0, 420.0])))
            added = record(user, "Product Added", at - timedelta(hours=rng.choice([1, 6])))
            records.append(replace(added, message_id=f"{user}-add-{n}"))
        for n in range(rng.choice([0, 2, 3])):
            category = rng.choice(["shoes", "bags"])
            viewed = record(user, "Product Viewed", day(rng.uniform(370, 400)))
            records.append(
                replace(viewed, properties={"category": category}, message_id=f"{user}-v{n}")
            )
    store(workspace, *records)
    first = refresh_segments(workspace=workspace, strategy=clothing, as_of=day(400), features=False)
    assert sum(r.entered for r in first) > 100
    assert len({r.name for r in first if r.size}) >= 15  # most segments and stages have members
    again = refresh_segments(workspace=workspace, strategy=clothing, as_of=day(400))
    assert [(r.name, r.entered, r.exited) for r in again if r.entered or r.exited] == []
    assert [r.size for r in again] == [r.size for r in first]
