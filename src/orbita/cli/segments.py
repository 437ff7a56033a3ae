"""`orbita segments list|preview|explain|refresh|members` and `orbita stages`.

The strategy is read from `--strategy FILE` (default `<workspace>/strategy.yaml`). These
commands open the workspace's stores themselves: while `orbita serve` holds the embedded
event store, use the HTTP API (`/v1/segments`) instead.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    err_console,
    parse_moment,
    print_json,
    settings_for,
    to_plain,
    user_errors,
)
from orbita.core.errors import UserError
from orbita.model.strategy import Strategy
from orbita.services import lifecycle
from orbita.services import segments as service
from orbita.services.apply import strategy_in_use
from orbita.services.strategy import check_strategy
from orbita.services.workspace import Workspace, open_workspace

app = typer.Typer(help="Segments: sizes, members, the SQL they run, refresh.", no_args_is_help=True)

StrategyOption = Annotated[
    Path | None,
    typer.Option(
        "--strategy",
        help="Strategy file (default: the applied one, else <workspace>/strategy.yaml).",
        dir_okay=False,
    ),
]
NameArgument = Annotated[str, typer.Argument(help="The segment's name in the strategy.")]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Evaluate at this time (ISO 8601 with a zone); default now."),
]


class Dialect(StrEnum):
    duckdb = "duckdb"
    postgres = "postgres"
    clickhouse = "clickhouse"
    pyspark = "pyspark"


class MembersFormat(StrEnum):
    csv = "csv"
    json = "json"


def _strategy(workspace: Path, path: Path | None) -> Strategy:
    return strategy_in_use(settings=settings_for(workspace), path=path)[1]


def _as_of(text: str | None) -> datetime | None:
    return None if text is None else parse_moment(text, option="--as-of")


def _open(workspace: Path) -> Workspace:
    return open_workspace(settings=settings_for(workspace))


@app.command("list")
def list_(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every segment with its size and its change at the last refresh."""
    with user_errors():
        loaded = _strategy(workspace, strategy)
        with _open(workspace) as opened:
            summaries = service.list_segments(workspace=opened, strategy=loaded)
            warnings = check_strategy(workspace=opened, strategy=loaded)
    for warning in warnings:
        err_console().print(
            f"warning: {warning.describe()}", markup=False, highlight=False, soft_wrap=True
        )
    if as_json:
        print_json(summaries)
        return
    table = Table("segment", "size", "entered", "exited", "as of", "")
    for item in summaries:
        table.add_row(
            item.name,
            "-" if item.size is None else f"{item.size:,}",
            f"+{item.entered:,}",
            f"-{item.exited:,}",
            item.refreshed_as_of.isoformat() if item.refreshed_as_of else "never refreshed",
            "definition changed" if item.definition_changed else "",
        )
    console().print(table)


@app.command()
def preview(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_of: AsOfOption = None,
    sample: Annotated[int, typer.Option(help="How many members to show.", min=0)] = 10,
    as_json: JsonOption = False,
) -> None:
    """The size and a sample of a segment, computed now; nothing is saved."""
    with user_errors():
        loaded = _strategy(workspace, strategy)
        with _open(workspace) as opened:
            result = service.preview_segment(
                workspace=opened, strategy=loaded, name=name, as_of=_as_of(as_of), sample=sample
            )
    if as_json:
        print_json(result)
        return
    out = console()
    out.print(f"{result.name}: {result.size:,} customers as of {result.as_of.isoformat()}")
    for member in result.sample:
        out.print(f"  {member.user_id or '-'}  (#{member.customer_id})", markup=False)


@app.command()
def explain(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    dialect: Annotated[Dialect, typer.Option(help="Which engine's SQL.")] = Dialect.duckdb,
    as_of: AsOfOption = None,
) -> None:
    """The SQL a segment runs, for one engine (needs no stores)."""
    from orbita.core.clock import SystemClock

    with user_errors():
        loaded = _strategy(workspace, strategy)
        moment = _as_of(as_of) or SystemClock().now()
        sql = service.explain_segment(
            strategy=loaded, name=name, dialect=dialect.value, as_of=moment
        )
    sys.stdout.write(sql.rstrip() + "\n")


@app.command()
def refresh(
    names: Annotated[
        list[str] | None, typer.Argument(help="Segments to refresh (default: all, and stages).")
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute members, record who entered and left, emit Segment Entered / Exited."""
    with user_errors():
        loaded = _strategy(workspace, strategy)
        with _open(workspace) as opened:
            reports = service.refresh_segments(
                workspace=opened, strategy=loaded, as_of=_as_of(as_of), names=names or None
            )
    if as_json:
        print_json(reports)
        return
    table = Table("segment", "size", "entered", "exited", "seconds")
    for report in reports:
        label = report.name if report.kind == "segment" else f"stage {report.name}"
        table.add_row(
            label,
            f"{report.size:,}",
            f"+{report.entered:,}",
            f"-{report.exited:,}",
            f"{report.seconds:.2f}" + ("" if report.changed else " (unchanged)"),
        )
    console().print(table)


@app.command()
def members(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    fmt: Annotated[MembersFormat, typer.Option("--format", help="Output format.")] = (
        MembersFormat.csv
    ),
) -> None:
    """The current members (as of the last refresh), one per line."""
    with user_errors():
        loaded = _strategy(workspace, strategy)
        if name not in loaded.segments:
            raise UserError(f"unknown segment {name!r} in the strategy")
        with _open(workspace) as opened:
            found = service.segment_members(workspace=opened, name=name)
    if fmt is MembersFormat.json:
        print_json(found)
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["customer_id", "user_id", "entered_at"])
    for member in found:
        writer.writerow([member.customer_id, member.user_id or "", member.entered_at.isoformat()])


def stages(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Customers per lifecycle stage (as of the last refresh)."""
    with user_errors():
        loaded = _strategy(workspace, strategy)
        with _open(workspace) as opened:
            sizes = lifecycle.stage_sizes(workspace=opened, strategy=loaded)
    if as_json:
        print_json(to_plain(sizes))
        return
    table = Table("stage", "customers")
    for size in sizes:
        table.add_row(size.stage, f"{size.customers:,}")
    console().print(table)
