"""What KPIs, funnels and cohorts share: periods (day, week, month, or the whole range),
the unbound tables of the event store's dialect, and running an expression on a store.

Periods are UTC calendar periods: a week starts on Monday (ISO, as DuckDB's and
PostgreSQL's date_trunc count it), a month on its first day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

import ibis
from sqlalchemy import ColumnElement, func, literal

from orbita.core.errors import UserError
from orbita.engine.segments.tables import DIALECTS, Dialect, SegmentTables, segment_tables
from orbita.store.events.base import EventStore

Expr = Any  # Ibis expressions are untyped for mypy
Grain = Literal["day", "week", "month", "total"]
GRAINS: tuple[Grain, ...] = get_args(Grain)
_UNITS = {"day": "D", "week": "W", "month": "M"}


def parse_grain(value: str, *, field: str = "grain") -> Grain:
    if value not in GRAINS:
        raise UserError(f"{field}: unknown period {value!r} (use {', '.join(GRAINS)})")
    grain: Grain = value  # checked just above
    return grain


def utc(moment: datetime, *, field: str = "time") -> datetime:
    if moment.tzinfo is None:
        raise UserError(f"{field}: {moment.isoformat()} needs a time zone")
    return moment.astimezone(UTC)


def period_start(moment: datetime, grain: Grain, *, start: datetime) -> date:
    """The first day of the period holding `moment` (Python's side of `period_expr`)."""
    day = moment.astimezone(UTC).date()
    if grain == "day":
        return day
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return start.astimezone(UTC).date()


def periods(start: datetime, end: datetime, grain: Grain) -> list[date]:
    """Every period that overlaps [start, end), in order."""
    found: list[date] = []
    current = period_start(start, grain, start=start)
    last = period_start(end - timedelta(microseconds=1), grain, start=start)
    while current <= last:
        found.append(current)
        if grain == "total":
            break
        current = next_period(current, grain)
    return found


def next_period(day: date, grain: Grain) -> date:
    if grain == "day":
        return day + timedelta(days=1)
    if grain == "week":
        return day + timedelta(days=7)
    if grain == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    raise ValueError("the total period has no next one")


def as_date(value: Any) -> date:
    """A period start as the database returned it (timestamp, date or ISO text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def timestamp(moment: datetime) -> Expr:
    return ibis.literal(utc(moment), type="timestamp('UTC')")


def period_expr(column: Expr, grain: Grain, *, start: datetime) -> Expr:
    """The period of a timestamp column, as a timestamp at the period's start."""
    if grain == "total":
        return timestamp(start)
    return column.truncate(_UNITS[grain])


def state_period(column: Any, grain: Grain, *, dialect: str, start: datetime) -> ColumnElement[Any]:
    """`period_expr` for the state store (SQLAlchemy): SQLite has no date_trunc, and keeps
    UTC times as text; PostgreSQL truncates in the session's zone unless told UTC."""
    if grain == "total":
        return literal(start.astimezone(UTC).date().isoformat())
    if dialect == "sqlite":
        if grain == "day":
            return func.date(column)
        if grain == "week":  # the next Sunday (or that Sunday), then back to its Monday
            return func.date(column, "weekday 0", "-6 days")
        return func.strftime("%Y-%m-01", column)
    return func.date_trunc(grain, func.timezone("UTC", column))


@dataclass(frozen=True, slots=True)
class Source:
    """An event store opened for analytics: its dialect's unbound tables and a runner."""

    store: EventStore
    tables: SegmentTables

    @property
    def dialect(self) -> Dialect:
        return self.tables.dialect

    def rows(self, expr: Expr) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.store.ibis().to_pyarrow(expr).to_pylist()
        return rows


def source_of(store: EventStore) -> Source:
    backend = store.backend
    if backend not in DIALECTS:
        raise UserError(f"analytics cannot run on the {backend} event store yet")
    dialect: Dialect = backend  # checked just above
    return Source(store=store, tables=segment_tables(dialect))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# How far back a report looks when no start is given, by its period.
DEFAULT_LOOKBACK: dict[str, timedelta] = {
    "day": timedelta(days=30),
    "week": timedelta(weeks=12),
    "month": timedelta(days=365),
    "total": timedelta(days=28),
}


def default_range(
    *, now: datetime, grain: str, start: datetime | None = None, end: datetime | None = None
) -> tuple[datetime, datetime]:
    """[start, end) of a report: `end` defaults to now, `start` to DEFAULT_LOOKBACK before."""
    until = utc(end, field="end") if end is not None else utc(now, field="now")
    since = utc(start, field="start") if start is not None else until - DEFAULT_LOOKBACK[grain]
    if until <= since:
        raise UserError("end: must come after start")
    return since, until
