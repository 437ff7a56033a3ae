"""`orbita kpis`: the strategy's goals — each KPI now, against its target and the straight
path to it — and the weekly trend."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.analytics.goals import GoalProgress, goals_progress
from orbita.analytics.kpis import options_for, shown
from orbita.cli.analytics_kpis import now_of, strategy_needed
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
from orbita.services.workspace import open_workspace


def kpis(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Measure at this time (ISO 8601 with a zone); default now."),
    ] = None,
    strategy: Annotated[
        Path | None,
        typer.Option("--strategy", help="Strategy file (default: the one in use).", dir_okay=False),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """The goals of the strategy: current value, target, expected by now, status, trend."""
    settings = settings_for(workspace)
    with user_errors(workspace=workspace):
        chosen = strategy_needed(settings, strategy)
        with open_workspace(settings=settings) as ws:
            now: datetime = now_of(ws) if as_of is None else parse_moment(as_of, option="--as-of")
            found = goals_progress(
                events=ws.events,
                state=ws.state,
                strategy=chosen,
                now=now,
                options=options_for(chosen),
            )
    if as_json:
        print_json(to_plain(found))
        return
    render_goals(found)


def _scope(goal: GoalProgress) -> str:
    return goal.journey or goal.segment or "store"


def render_goals(found: list[GoalProgress]) -> None:
    out = console()
    if not found:
        out.print("the strategy has no goals: add them under goals:", markup=False)
        return
    table = Table("goal", "now", "target", "by", "on the path", "status")
    for goal in found:
        table.add_row(
            f"{goal.kpi} ({_scope(goal)})",
            shown(goal.kpi, goal.current),
            shown(goal.kpi, goal.target),
            goal.by.isoformat(),
            shown(goal.kpi, goal.expected),
            goal.status.replace("_", " "),
        )
    out.print(table)
    for goal in found:
        weeks = " ".join(shown(goal.kpi, point.value) for point in goal.trend)
        out.print(f"{goal.kpi} ({_scope(goal)}) by week: {weeks}", markup=False, highlight=False)
