"""`orbita analytics kpis`: KPIs per period and dimension as tidy rows (and the range and
clock options the other analytics commands share).

"Now" is the workspace's simulated clock when `orbita run` has moved it, else the wall
clock; `--end` overrides it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.analytics.kpis import (
    CATALOGUE,
    KpiRow,
    check_dimensions,
    check_metrics,
    compute_kpis,
    options_for,
    shown,
)
from orbita.analytics.periods import Grain, default_range, parse_grain
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    parse_moment,
    print_json,
    settings_for,
    to_plain,
    user_errors,
)
from orbita.core.settings import Settings
from orbita.model.strategy import Strategy
from orbita.services.apply import strategy_if_any, strategy_in_use
from orbita.services.runner import saved_clock
from orbita.services.workspace import Workspace, open_workspace

StartOption = Annotated[
    str | None,
    typer.Option("--start", help="From (ISO 8601 with a zone); default: a span before --end."),
]
EndOption = Annotated[
    str | None,
    typer.Option("--end", help="Until, exclusive (ISO 8601 with a zone); default: now."),
]
PeriodOption = Annotated[
    str, typer.Option("--period", help="day, week, month, or total (the whole range).")
]


def now_of(workspace: Workspace) -> datetime:
    """The workspace's simulated clock if `orbita run` moved it, else the wall clock."""
    return saved_clock(workspace=workspace) or workspace.clock.now()


def report_range(
    workspace: Workspace, *, grain: str, start: str | None, end: str | None
) -> tuple[datetime, datetime]:
    return default_range(
        now=now_of(workspace),
        grain=grain,
        start=None if start is None else parse_moment(start, option="--start"),
        end=None if end is None else parse_moment(end, option="--end"),
    )


def kpis(
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="A KPI (repeat the option); default: all."),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="A dimension: all, journey, step, variant, channel, template, arm, segment, "
            "stage (repeat the option).",
        ),
    ] = None,
    period: PeriodOption = "week",
    start: StartOption = None,
    end: EndOption = None,
    churn_days: Annotated[
        int | None,
        typer.Option(
            help="Days without a purchase that make a customer churned "
            "(default: the lifecycle's lapse window, else 90)."
        ),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """KPIs per period and dimension: tidy rows (metric, period, dimension, key, value)."""
    settings = settings_for(workspace)
    with user_errors(workspace=workspace):
        grain = parse_grain(period, field="--period")
        metrics = check_metrics(metric, field="--metric") if metric else None
        dimensions = check_dimensions(by, field="--by") if by else None
        strategy = strategy_if_any(settings=settings)
        with open_workspace(settings=settings) as ws:
            since, until = report_range(ws, grain=grain, start=start, end=end)
            rows = compute_kpis(
                events=ws.events,
                state=ws.state,
                start=since,
                end=until,
                grain=grain,
                metrics=metrics,
                dimensions=dimensions,
                options=options_for(strategy, churn_days=churn_days),
            )
    if as_json:
        print_json(to_plain(rows))
        return
    render_rows(rows, grain=grain)


def strategy_needed(settings: Settings, path: Path | None = None) -> Strategy:
    return strategy_in_use(settings=settings, path=path)[1]


def render_rows(rows: list[KpiRow], *, grain: Grain) -> None:
    table = Table("metric", "dimension", "key", grain if grain != "total" else "from", "value")
    for row in rows:
        table.add_row(
            row.metric,
            row.dimension,
            row.key or "-",
            row.period.isoformat(),
            shown(row.metric, row.value),
        )
    console().print(table)
    if not rows:
        console().print(f"no rows (KPIs: {', '.join(CATALOGUE)})", markup=False)
