"""`orbita analytics cohorts`: retention and revenue by acquisition cohort, as a triangle."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from orbita.analytics.cohorts import CohortRow, compute_cohorts
from orbita.analytics.kpis import PURCHASE_EVENT, REVENUE_PROPERTY
from orbita.analytics.periods import parse_grain
from orbita.cli.analytics_kpis import EndOption, StartOption, report_range
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_json,
    settings_for,
    to_plain,
    user_errors,
)
from orbita.core.errors import UserError
from orbita.services.segments import sync_customer_snapshot
from orbita.services.workspace import open_workspace


def cohorts(
    period: Annotated[str, typer.Option("--period", help="day, week or month.")] = "month",
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="period (acquisition period), trait:NAME or property:NAME (of the "
            "first acquisition event).",
        ),
    ] = "period",
    acquisition: Annotated[
        str, typer.Option(help="The event that acquires a customer (their first).")
    ] = PURCHASE_EVENT,
    activity: Annotated[str, typer.Option(help="The event that counts as retained.")] = (
        PURCHASE_EVENT
    ),
    revenue: Annotated[str, typer.Option(help="The activity's revenue property.")] = (
        REVENUE_PROPERTY
    ),
    start: StartOption = None,
    end: EndOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Customers acquired in [start, end) followed period by period: retention, revenue."""
    settings = settings_for(workspace)
    with user_errors(workspace=workspace):
        grain = parse_grain(period, field="--period")
        if grain == "total":
            raise UserError("--period: cohorts need day, week or month")
        with open_workspace(settings=settings) as ws:
            since, until = report_range(ws, grain=grain, start=start, end=end)
            if by.startswith("trait:"):
                # Traits are read from the event store's copy of the profiles: bring it up to date.
                sync_customer_snapshot(workspace=ws, full=False)
            rows = compute_cohorts(
                events=ws.events,
                start=since,
                end=until,
                grain=grain,
                by=by,
                acquisition=acquisition,
                activity=activity,
                revenue_property=revenue,
            )
    if as_json:
        print_json(to_plain(rows))
        return
    render_triangle(rows)


def render_triangle(rows: list[CohortRow]) -> None:
    """Cohorts down, periods across: retention, with the cohort's size first."""
    last = max((row.period for row in rows), default=0)
    table = Table("cohort", "customers", *(str(p) for p in range(last + 1)))
    cohorts: dict[str, list[CohortRow]] = {}
    for row in rows:
        cohorts.setdefault(row.cohort, []).append(row)
    for cohort, mine in cohorts.items():
        cells = {row.period: row for row in mine}
        table.add_row(
            cohort,
            f"{mine[0].customers:,}",
            *(
                "" if p not in cells or cells[p].retention is None else f"{cells[p].retention:.0%}"
                for p in range(last + 1)
            ),
        )
    console().print(table)
