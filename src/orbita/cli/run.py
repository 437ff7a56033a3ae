"""`orbita run --until T` (simulated time) and `orbita worker` (the wall clock)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    err_console,
    parse_moment,
    print_json,
    progress_bar,
    settings_for,
    user_errors,
)
from orbita.core.errors import UserError
from orbita.model.durations import parse_duration
from orbita.services.runner import RunReport, run_applied
from orbita.services.workspace import open_workspace
from orbita.worker.loop import WorkerLoop

UntilOption = Annotated[
    str, typer.Option("--until", help="Run up to this time (ISO 8601 with a zone).")
]
FromOption = Annotated[
    str | None,
    typer.Option(
        "--from", help="Where the clock starts, on the first run (later runs go on from there)."
    ),
]
StepOption = Annotated[
    str, typer.Option("--step", help="Window of simulated time processed at once (1h, 15m).")
]
RefreshOption = Annotated[
    str, typer.Option("--refresh-every", help="Refresh segments every (1d, 6h; 0 never).")
]


def simulate(
    *,
    workspace: Path,
    until: str | None,
    start: str | None,
    step: str,
    refresh_every: str,
    events_file: Path | None = None,
) -> RunReport:
    """Shared by `orbita run` and `orbita import events --replay`: parse, then run."""
    try:
        window, refresh = parse_duration(step), parse_duration(refresh_every)
    except ValueError as error:
        raise UserError(f"--step / --refresh-every: {error}") from None
    with (
        open_workspace(settings=settings_for(workspace)) as opened,
        progress_bar("simulated time (%)") as update,
    ):
        return run_applied(
            workspace=opened,
            until=parse_moment(until, option="--until") if until is not None else None,
            start=parse_moment(start, option="--from") if start is not None else None,
            step=window,
            refresh_every=refresh if refresh.total_seconds() > 0 else None,
            events_file=events_file,
            progress=lambda done: update(done, 100),
        )


def run(
    until: UntilOption,
    start: FromOption = None,
    step: StepOption = "1h",
    refresh_every: RefreshOption = "1d",
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Move the workspace's simulated clock to --until, doing everything due on the way:
    scheduled and date entries, segment refreshes and their triggers, due journey steps."""
    with user_errors(workspace=workspace):
        report = simulate(
            workspace=workspace,
            until=until,
            start=start,
            step=step,
            refresh_every=refresh_every,
        )
    show_run(report, as_json=as_json)


def show_run(report: RunReport, *, as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    console().print(
        f"{report.started.isoformat()} -> {report.until.isoformat()}: "
        f"{report.events:,} events played, {report.entered:,} journey entries, "
        f"{report.advanced:,} runs advanced, {report.messages:,} messages queued, "
        f"{report.suppressed:,} held back (holdout), {report.conversions:,} conversions, "
        f"{report.refreshes:,} segment refreshes",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True


def worker(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    batch: Annotated[int, typer.Option(min=1, help="Runs claimed per transaction.")] = 1000,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds to sleep when idle.")] = 1.0,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop once nothing is due (for cron and tests).")
    ] = False,
    deliver: Annotated[
        bool,
        typer.Option(
            "--deliver", help="Also send the outbox's due messages on the strategy's channels."
        ),
    ] = False,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Name in claims (default: host:pid).")
    ] = None,
) -> None:
    """Advance journeys on the wall clock: scheduled entries and due steps, in batches (and,
    with --deliver, send what they queued). Several workers on one PostgreSQL share the
    work; SIGTERM stops after the batch."""
    name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    stop = _Stop()
    settings = settings_for(workspace)
    with user_errors(workspace=workspace), open_workspace(settings=settings) as opened:
        err_console().print(f"worker {name} started", markup=False)
        loop = WorkerLoop(
            workspace=opened, settings=settings, name=name, batch=batch, deliver=deliver
        )
        try:
            while not stop.requested:
                busy = loop.once()
                if not busy:
                    if until_idle:
                        break
                    time.sleep(poll)
        finally:
            loop.close()
    err_console().print(
        f"worker {name} stopped: {loop.advanced:,} runs advanced, {loop.sent:,} messages sent",
        markup=False,
    )
