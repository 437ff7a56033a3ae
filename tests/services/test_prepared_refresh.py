"""Queries compiled once with `as_of` a parameter (engine/segments/prepared.py) give what a
fresh compile gives at every `as_of`, and a run of refreshes that keeps them (the runner's
`PreparedRefresh`) records what refreshes compiled one by one record."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from segment_helpers import day, identify, order, record, store, strategy

from orbita.core.settings import Settings
from orbita.engine.segments.compile import compile_segment
from orbita.engine.segments.prepared import prepare
from orbita.engine.segments.tables import segment_tables
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.segments import PreparedRefresh, refresh_segments
from orbita.services.workspace import Workspace, init_workspace, open_workspace

CLOTHING = Path(__file__).parents[1] / "fixtures" / "clothing_segments.yaml"
MOMENTS = [day(n) for n in (370, 385.5, 400, 401, 431, 520)]  # hours, days, a quarter apart
EXTRA = strategy(
    """
segments:
  since_spring:
    trait: created_at
    gt: 2026-03-02T00:00:00Z
  birthdays:
    trait: birthday
    anniversary_within: 7d
"""
)


def clothing() -> Strategy:
    return parse_strategy(CLOTHING.read_text(), source=str(CLOTHING))


def shop() -> list[EventRecord]:
    rng = random.Random(11)
    records = []
    for i in range(50):
        user = f"u{i}"
        joined = day(rng.uniform(0, 380))
        records.append(
            replace(identify(user, country=rng.choice(["UA", "PL", "DE"])), timestamp=joined)
        )
        for n in range(rng.choice([0, 1, 2, 4, 7])):
            at = day(rng.uniform(0, 510))
            records.append(order(user, at, rng.choice([30.0, 160.0, 420.0])))
            added = record(user, "Product Added", at - timedelta(hours=rng.choice([1, 6])))
            records.append(replace(added, message_id=f"{user}-add-{n}"))
        for n in range(rng.choice([0, 2, 3])):
            viewed = record(user, "Product Viewed", day(rng.uniform(360, 510)))
            category = rng.choice(["shoes", "bags"])
            records.append(
                replace(viewed, properties={"category": category}, message_id=f"{user}-v{n}")
            )
    return records


def _ids(rows: Any) -> list[int]:
    return sorted(int(row[0]) for row in rows)


def test_a_prepared_segment_query_equals_a_fresh_compile_at_every_as_of(
    workspace: Workspace,
) -> None:
    """Every segment of the clothing store (events, windows, sequences, computed traits,
    references inlined) on DuckDB and PostgreSQL."""
    store(workspace, *shop())
    rules = clothing()
    dialect = workspace.events.backend
    tables = segment_tables(dialect)
    backend = workspace.events.ibis()
    checked = 0
    for name, segment in rules.segments.items():

        def build(at: Any, segment: Any = segment, name: str = name) -> Any:
            return compile_segment(
                segment,
                as_of=at,
                tables=tables,
                segments=rules.segments,
                computed_traits=rules.computed_traits,
                name=name,
            )

        query = prepare(build, as_of=MOMENTS[0], dialect=dialect)
        assert query is not None, name
        for moment in MOMENTS:
            fresh = backend.to_pyarrow(build(moment)).column("customer_id").to_pylist()
            text, values = query.sql(moment)
            if dialect == "duckdb":
                again = backend.con.sql(text, params=values).fetchall()
            else:
                assert values == {}  # PostgreSQL gets the literals printed in
                with backend.raw_sql(text) as cursor:
                    again = cursor.fetchall()
            assert _ids(again) == sorted(fresh), (name, moment)
            checked += len(fresh)
    assert checked > 200  # the moments move members in and out, not empty sets


def test_fixed_dates_stay_literals_and_anniversaries_are_compiled_each_time() -> None:
    tables = segment_tables("duckdb")
    since = EXTRA.segments["since_spring"]
    query = prepare(
        lambda at: compile_segment(since, as_of=at, tables=tables), as_of=day(9), dialect="duckdb"
    )
    assert query is not None and query.slots.offsets == []
    assert "2026" in query.text  # the constant, printed as a literal
    birthdays = EXTRA.segments["birthdays"]
    built = prepare(
        lambda at: compile_segment(birthdays, as_of=at, tables=tables),
        as_of=day(9),
        dialect="duckdb",
    )
    assert built is None  # the month-days listed move with as_of: no parameter carries them


def _refreshes(tmp: Path, records: list[EventRecord], prepared: PreparedRefresh | None) -> Any:
    settings = Settings(workspace=tmp)
    init_workspace(settings=settings)
    rules = clothing()
    found = []
    with open_workspace(settings=settings) as opened:
        store(opened, *records)
        for moment in MOMENTS:
            reports = refresh_segments(
                workspace=opened, strategy=rules, as_of=moment, prepared=prepared
            )
            found.append([(r.name, r.kind, r.size, r.entered, r.exited) for r in reports])
            sent = opened.events.counts_by_name()
        found.append(sorted(sent.items()))
    return found


def test_a_run_of_prepared_refreshes_records_what_fresh_refreshes_record(tmp_path: Path) -> None:
    """Segments, RFM cells and lifecycle stages, refreshed at six moments by one
    `PreparedRefresh` (compiled at the first) and compiled anew each time."""
    records = shop()
    prepared = PreparedRefresh()
    kept = _refreshes(tmp_path / "prepared", records, prepared)
    fresh = _refreshes(tmp_path / "fresh", records, None)
    assert kept == fresh
    assert sum(entered for reports in fresh[:-1] for _, _, _, entered, _ in reports) > 100
    assert sum(exited for reports in fresh[1:-1] for _, _, _, _, exited in reports) > 10
    assert prepared._queries and all(q is not None for q in prepared._queries.values())


def test_a_schedules_segment_compiled_once_finds_the_members_of_each_moment(
    workspace: Workspace,
) -> None:
    """The schedule's segment at each cron moment (scheduler._members_at), on both engines."""
    from orbita.services.scheduler import _members_at

    store(workspace, *shop())
    rules = clothing()
    prepared = PreparedRefresh()
    found = 0
    for name in ("lapsed_30d", "at_risk_buyers", "shoe_browsers"):
        for moment in MOMENTS:
            kept = _members_at(workspace, rules, name, moment, prepared=prepared)
            assert kept == _members_at(workspace, rules, name, moment), (name, moment)
            found += len(kept)
    assert found > 50
    assert len(prepared._queries) == 3 and None not in prepared._queries.values()
