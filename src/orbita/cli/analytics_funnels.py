"""`orbita analytics funnel NAME`: a funnel of the strategy, per step and breakdown group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.analytics.funnels import (
    ALL,
    FunnelResult,
    check_breakdown_segments,
    compute_funnel,
    funnel_of,
)
from orbita.cli.analytics_kpis import EndOption, StartOption, report_range, strategy_needed
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
from orbita.services.segments import sync_customer_snapshot
from orbita.services.workspace import open_workspace


def funnel(
    name: Annotated[str, typer.Argument(help="The funnel's name in the strategy (funnels:).")],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Break down by stage, segment:NAME[,NAME…] or trait:NAME."),
    ] = None,
    start: StartOption = None,
    end: EndOption = None,
    strategy: Annotated[
        Path | None,
        typer.Option("--strategy", help="Strategy file (default: the one in use).", dir_okay=False),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Customers at each step, conversion from the previous and the first, median time."""
    settings = settings_for(workspace)
    with user_errors(workspace=workspace):
        found = strategy_needed(settings, strategy)
        chosen = funnel_of(found, name)
        check_breakdown_segments(found, by or chosen.by)
        with open_workspace(settings=settings) as ws:
            since, until = report_range(ws, grain="month", start=start, end=end)
            if (by or chosen.by or "").startswith("trait:"):
                # Traits are read from the event store's copy of the profiles: bring it up to date.
                sync_customer_snapshot(workspace=ws, full=False)
            result = compute_funnel(
                events=ws.events, funnel=chosen, name=name, start=since, end=until, breakdown=by
            )
    if as_json:
        print_json(to_plain(result))
        return
    render_funnel(result)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 60:.0f} min"


def render_funnel(result: FunnelResult) -> None:
    out = console()
    window = _duration(result.within_seconds)
    out.print(
        f"{result.name}: {result.order} order, within {window}, attempts from "
        f"{result.start.isoformat()} to {result.end.isoformat()}",
        markup=False,
        highlight=False,
    )
    table = Table("group", "step", "customers", "from previous", "from first", "median time")
    for row in result.rows:
        table.add_row(
            "all" if row.group == ALL else row.group,
            f"{row.step}. {row.name}",
            f"{row.customers:,}",
            _percent(row.from_previous),
            _percent(row.from_first),
            _duration(row.median_seconds),
        )
    out.print(table)
