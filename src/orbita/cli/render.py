"""Rich tables for what the commands print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orbita.services.importer import ImportReport

if TYPE_CHECKING:  # the summary imports Ibis and numpy, which only its command needs
    from orbita.services.summary import WorkspaceSummary


def summary_tables(console: Console, summary: WorkspaceSummary) -> None:
    overview = Table(title="Workspace", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    overview.add_row("customers", f"{summary.customers:,}")
    overview.add_row("events", f"{summary.events:,}")
    if summary.first_event and summary.last_event:
        overview.add_row("from", summary.first_event.date().isoformat())
        overview.add_row("to", summary.last_event.date().isoformat())
    overview.add_row("revenue", f"{summary.revenue:,.2f}")
    console.print(overview)

    by_name = Table(title="Events by type")
    by_name.add_column("event")
    by_name.add_column("count", justify="right")
    by_name.add_column("share", justify="right")
    for row in summary.events_by_name:
        share = row.events / summary.events if summary.events else 0.0
        by_name.add_row(Text(row.name), f"{row.events:,}", f"{share:.1%}")
    console.print(by_name)

    revenue = Table(title="Revenue by month (Order Completed)")
    revenue.add_column("month")
    revenue.add_column("orders", justify="right")
    revenue.add_column("revenue", justify="right")
    revenue.add_column("average order", justify="right")
    for month in summary.revenue_by_month:
        average = month.revenue / month.orders if month.orders else 0.0
        revenue.add_row(
            month.month.strftime("%Y-%m"),
            f"{month.orders:,}",
            f"{month.revenue:,.2f}",
            f"{average:,.2f}",
        )
    console.print(revenue)


def import_line(report: ImportReport) -> str:
    how = ", vectorised" if report.vectorised else ""
    return (
        f"{report.kind}: {report.rows:,} rows from {report.path.name} ({report.format}{how}): "
        f"{report.stored:,} stored, {report.duplicates:,} already there "
        f"in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)"
    )


def customer_tables(console: Console, customer: Mapping[str, Any]) -> None:
    """A customer as the API and `customers show --json` give it."""
    profile = customer["profile"]
    table = Table(title=f"Customer {profile.get('user_id') or profile['customer_id']}")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for field in (
        "customer_id",
        "user_id",
        "email",
        "phone",
        "telegram_chat_id",
        "timezone",
        "locale",
        "created_at",
        "updated_at",
    ):
        value = profile.get(field)
        table.add_row(field, Text("" if value is None else str(value)))
    table.add_row("anonymous_ids", Text(", ".join(profile.get("anonymous_ids") or [])))
    table.add_row("events", f"{customer['events_count']:,}")
    console.print(table)

    traits = profile.get("traits") or {}
    if traits:
        trait_table = Table(title="Traits")
        trait_table.add_column("trait")
        trait_table.add_column("value", overflow="fold")
        for name in sorted(traits):
            trait_table.add_row(Text(name), _short(traits[name]))
        console.print(trait_table)

    events = customer.get("latest_events") or []
    if events:
        event_table = Table(title=f"Latest {len(events)} events")
        event_table.add_column("time")
        event_table.add_column("type")
        event_table.add_column("event")
        event_table.add_column("properties", overflow="fold")
        for event in events:
            event_table.add_row(
                Text(str(event["timestamp"])),
                Text(event["type"]),
                Text(event.get("name") or ""),
                _short(event.get("properties") or {}),
            )
        console.print(event_table)


def _short(value: Any, limit: int = 120) -> Text:
    # Text, not markup: customer data may contain brackets.
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return Text(text if len(text) <= limit else text[: limit - 1] + "…")


def rate(value: float | None) -> str:
    """A share as a percentage, `-` when there is nothing to divide by."""
    return "-" if value is None else f"{value:.1%}"
