"""`orbita deliver`: send what the outbox holds that is due; `orbita deliver status`: counts
per status and the latest dead letters with their reasons."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.channels import open_channels
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    fail,
    print_json,
    settings_for,
    user_errors,
)
from orbita.services.apply import strategy_in_use
from orbita.services.dead_letters import retry_dead_letters
from orbita.services.delivery import (
    BlockingSender,
    link_secret_for,
    outbox_status,
    prepare_delivery,
)
from orbita.services.work import LiveJourneys
from orbita.services.workspace import open_workspace

app = typer.Typer(
    help="Deliver the outbox: send what is due (retries included); `status` shows the queue.",
    invoke_without_command=True,
)

StrategyOption = Annotated[
    Path | None,
    typer.Option(
        "--strategy",
        help="Strategy file (default: the applied one, else <workspace>/strategy.yaml).",
        dir_okay=False,
    ),
]


@app.callback()
def deliver(
    ctx: typer.Context,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    worker_id: Annotated[
        str, typer.Option(help="This sender's name (its claims carry it).")
    ] = "sender",
    as_json: JsonOption = False,
) -> None:
    """Send every message due now, then print what happened to them."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_for(workspace)
    with user_errors(workspace=workspace):
        path, loaded = strategy_in_use(settings=settings, path=strategy)
        with open_workspace(settings=settings) as opened:
            delivery = prepare_delivery(
                strategy=loaded,
                base_dir=path.parent,
                clients=open_channels(loaded.channels, env=dict(os.environ)),
                worker_id=worker_id,
                link_secret=link_secret_for(settings=settings),
                public_url=settings.public_url,
                on_events=LiveJourneys(workspace=opened).on_stored,
            )
            with BlockingSender(delivery=delivery) as sender:
                report = sender.deliver_due(workspace=opened, now=datetime.now(UTC))
    if as_json:
        print_json(report)
        return
    out = console()
    for name in ("claimed", "sent", "retried", "dead", "skipped", "unconfirmed", "recovered"):
        out.print(f"{name:<12} {getattr(report, name):>8,}", markup=False, highlight=False)


@app.command()
def status(workspace: WorkspaceOption = DEFAULT_WORKSPACE, as_json: JsonOption = False) -> None:
    """Messages per status, and the latest dead letters with the reason each was given up."""
    with (
        user_errors(workspace=workspace),
        open_workspace(settings=settings_for(workspace)) as opened,
    ):
        found = outbox_status(workspace=opened)
    if as_json:
        print_json(found)
        return
    out = console()
    for name, count in sorted(found["counts"].items()):
        out.print(f"{name:<12} {count:>8,}", markup=False, highlight=False)
        if name == "sent" and found["unconfirmed"]:
            unconfirmed = found["unconfirmed"]
            out.print(f"  of them {unconfirmed:,} unconfirmed", markup=False, highlight=False)
    if found["dead"]:
        table = Table("outbox id", "journey", "template", "customer", "attempts", "reason")
        for row in found["dead"]:
            table.add_row(
                *(
                    str(row[k])
                    for k in (
                        "outbox_id",
                        "journey",
                        "template",
                        "customer_id",
                        "attempts",
                        "reason",
                    )
                )
            )
        out.print(table)


@app.command()
def retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Outbox ids of dead letters (see `status`).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    channel: Annotated[str | None, typer.Option(help="With --all: of this channel.")] = None,
    journey: Annotated[str | None, typer.Option(help="With --all: of this journey.")] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Put dead letters back in the queue, due now (once what killed them is fixed)."""
    if bool(ids) == every:
        fail("name the dead letters to retry (their outbox ids), or --all")
    with (
        user_errors(workspace=workspace),
        open_workspace(settings=settings_for(workspace)) as opened,
    ):
        requeued = retry_dead_letters(
            workspace=opened,
            ids=None if every else ids,
            now=datetime.now(UTC),
            channel=channel,
            journey=journey,
        )
    if as_json:
        print_json({"requeued": requeued})
        return
    console().print(f"requeued {requeued:,}", markup=False, highlight=False)
