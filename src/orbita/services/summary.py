"""What a workspace holds: customers, events by name, revenue by month (what `orbita demo` prints).

The queries are Ibis expressions over an unbound `events` table, so the same code runs on
every event store (DuckDB, PostgreSQL) and the SQL names no connection's catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.datatypes as dt

from orbita.services.workspace import Workspace

ORDER_EVENT = "Order Completed"


@dataclass(frozen=True, slots=True)
class EventCount:
    name: str
    events: int


@dataclass(frozen=True, slots=True)
class MonthRevenue:
    month: date
    orders: int
    revenue: float


@dataclass(frozen=True, slots=True)
class WorkspaceSummary:
    customers: int
    events: int
    first_event: datetime | None
    last_event: datetime | None
    events_by_name: tuple[EventCount, ...]
    revenue_by_month: tuple[MonthRevenue, ...]

    @property
    def revenue(self) -> float:
        return sum(month.revenue for month in self.revenue_by_month)


def events_table(*, backend: str = "duckdb") -> Any:
    """The columns these queries read, typed as the named event store exposes them."""
    # PostgreSQL keeps properties as jsonb, whose functions differ from json's.
    properties = dt.JSON(binary=backend == "postgres")
    return ibis.table(
        {
            "customer_id": "int64",
            "type": "string",
            "name": "string",
            "properties": properties,
            "timestamp": "timestamp('UTC')",
        },
        name="events",
    )


def totals_expr(events: Any) -> Any:
    return events.aggregate(
        customers=events.customer_id.nunique(),
        events=events.count(),
        first_event=events.timestamp.min(),
        last_event=events.timestamp.max(),
    )


def events_by_name_expr(events: Any) -> Any:
    # Identify, page and alias messages have no event name: they count under their type.
    label = events.name.fill_null(events.type).name("name")
    return (
        events.group_by(label)
        .aggregate(events=events.count())
        .order_by([ibis.desc("events"), "name"])
    )


def revenue_by_month_expr(events: Any) -> Any:
    orders = events.filter(events.name == ORDER_EVENT)
    return (
        orders.group_by(month=orders.timestamp.truncate("M"))
        .aggregate(
            orders=orders.count(),
            revenue=orders.properties["revenue"].float.sum().fill_null(0.0),
        )
        .order_by("month")
    )


def summarise(*, workspace: Workspace) -> WorkspaceSummary:
    """Customers, events by name and monthly revenue of the workspace's event store."""
    events = events_table(backend=workspace.events.backend)
    backend = workspace.events.ibis()
    totals = backend.to_pyarrow(totals_expr(events)).to_pylist()[0]
    by_name = backend.to_pyarrow(events_by_name_expr(events)).to_pylist()
    by_month = backend.to_pyarrow(revenue_by_month_expr(events)).to_pylist()
    return WorkspaceSummary(
        customers=int(totals["customers"] or 0),
        events=int(totals["events"] or 0),
        first_event=totals["first_event"],
        last_event=totals["last_event"],
        events_by_name=tuple(
            EventCount(name=str(row["name"]), events=int(row["events"])) for row in by_name
        ),
        revenue_by_month=tuple(
            MonthRevenue(
                month=_as_date(row["month"]),
                orders=int(row["orders"]),
                revenue=round(float(row["revenue"] or 0.0), 2),
            )
            for row in by_month
        ),
    )


def _as_date(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value
