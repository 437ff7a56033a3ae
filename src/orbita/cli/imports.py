"""`orbita import customers|events FILE`: bulk import from CSV, JSON Lines or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    phased_progress,
    print_json,
    settings_for,
    user_errors,
)
from orbita.cli.render import import_line
from orbita.cli.run import show_run, simulate
from orbita.services.importer import ImportReport, import_customers, import_events
from orbita.services.workspace import open_workspace

app = typer.Typer(
    help="Import customers or events (CSV, JSON Lines, Parquet). A file with any invalid row "
    "stores nothing; importing the same file again stores nothing new.",
    no_args_is_help=True,
)
FileArgument = Annotated[
    Path, typer.Argument(help="CSV, JSON Lines or Parquet file.", dir_okay=False)
]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", "-f", help="csv, jsonl or parquet (default: from the extension)."),
]


@app.command("customers")
def customers(
    file: FileArgument,
    fmt: FormatOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Customer profiles: userId, email, phone, timezone, … and any other column as a trait."""
    with (
        user_errors(workspace=workspace),
        phased_progress("customers") as progress,
        open_workspace(settings=settings_for(workspace)) as opened,
    ):
        report = import_customers(workspace=opened, path=file, fmt=fmt, progress=progress)
    _show(report, as_json=as_json)


@app.command("events")
def events(
    file: FileArgument,
    fmt: FormatOption = None,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Play the events through the journeys as the simulated clock passes their "
            "timestamps (a plain import is history: it triggers nothing).",
        ),
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="With --replay: where the clock stops (default: the last event)."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="With --replay: where a new clock starts.")
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Events: messageId, type, event, userId, anonymousId, timestamp, properties, context."""
    if replay:
        with user_errors(workspace=workspace):
            played = simulate(
                workspace=workspace,
                until=until,
                start=start,
                step="1h",
                refresh_every="1d",
                events_file=file,
            )
        show_run(played, as_json=as_json)
        return
    with (
        user_errors(workspace=workspace),
        phased_progress("events") as progress,
        open_workspace(settings=settings_for(workspace)) as opened,
    ):
        report = import_events(workspace=opened, path=file, fmt=fmt, progress=progress)
    _show(report, as_json=as_json)


def _show(report: ImportReport, *, as_json: bool) -> None:
    if as_json:
        print_json(report)
    else:
        console().print(import_line(report), markup=False, highlight=False)
