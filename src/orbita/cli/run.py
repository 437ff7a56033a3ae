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

from orbita.channels import open_channels
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
from orbita.core.clock import SimulatedClock
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.model.durations import parse_duration
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.services.apply import applied_version, require_applied
from orbita.services.delivery import BlockingSender, link_secret_for, prepare_delivery
from orbita.services.importer import read_events
from orbita.services.journeys import PublishedJourneys, load_journeys
from orbita.services.runner import RunReport, run_until, saved_clock
from orbita.services.work import work_once
from orbita.services.workspace import Workspace, open_workspace

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
    events: list[EventRecord] | None = None,
    events_file: Path | None = None,
) -> RunReport:
    """Shared by `orbita run` and `orbita import events --replay`."""
    try:
        window, refresh = parse_duration(step), parse_duration(refresh_every)
    except ValueError as error:
        raise UserError(f"--step / --refresh-every: {error}") from None
    settings = settings_for(workspace)
    with open_workspace(settings=settings) as opened:
        begin = saved_clock(workspace=opened)
        if begin is None:
            if start is None:
                raise UserError(
                    "this workspace has no simulated clock yet: give --from (where time starts)"
                )
            begin = parse_moment(start, option="--from")
        elif start is not None and parse_moment(start, option="--from") != begin:
            raise UserError(
                f"--from: the workspace's clock is at {begin.isoformat()} already "
                "(a clock does not go back)"
            )
        opened.clock = SimulatedClock(begin)
        if events_file is not None:
            events = read_events(workspace=opened, path=events_file)
        if events:
            # Events the clock has passed were played by an earlier run (or are history).
            events = [record for record in events if record.timestamp >= begin]
        if until is not None:
            moment = parse_moment(until, option="--until")
        elif events:
            moment = max(begin, events[-1].timestamp)
        else:
            raise UserError("--until: where should the clock stop?")
        applied = require_applied(workspace=opened)
        journeys = load_journeys(
            workspace=opened,
            timezone=applied.strategy.timezone,
            names=list(applied.strategy.journeys),
        )
        total = max((moment - begin).total_seconds(), 1.0)
        with progress_bar("simulated time (%)") as update:
            return run_until(
                workspace=opened,
                strategy=applied.strategy,
                journeys=journeys,
                start=begin,
                until=moment,
                events=events or (),
                step=window,
                refresh_every=refresh if refresh.total_seconds() > 0 else None,
                progress=lambda now: update(int(100 * (now - begin).total_seconds() / total), 100),
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
        loop = _Worker(opened, settings=settings, name=name, batch=batch, deliver=deliver)
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


class _Worker:
    """The strategy and journeys of the newest apply (loaded again after each), one pass at
    a time; with `deliver`, a sender on the strategy's channels."""

    def __init__(
        self, opened: Workspace, *, settings: Settings, name: str, batch: int, deliver: bool
    ) -> None:
        self.opened, self.settings, self.name, self.batch = opened, settings, name, batch
        self.deliver = deliver
        self.version: int | None = None
        self.sender: BlockingSender | None = None
        self.advanced = self.sent = 0

    def _load(self) -> tuple[Strategy, PublishedJourneys]:
        newest = applied_version(workspace=self.opened)
        if newest is None:
            raise UserError("no strategy is applied to this workspace yet: run `orbita apply FILE`")
        if newest != self.version:  # a new `orbita apply`: load what it published
            applied = require_applied(workspace=self.opened)
            self.version = applied.version
            self.loaded = (
                applied.strategy,
                load_journeys(
                    workspace=self.opened,
                    timezone=applied.strategy.timezone,
                    names=list(applied.strategy.journeys),
                ),
            )
            if self.deliver:
                self.close()
                delivery = prepare_delivery(
                    strategy=applied.strategy,
                    base_dir=Path(applied.source).parent,
                    clients=open_channels(applied.strategy.channels, env=dict(os.environ)),
                    worker_id=self.name,
                    link_secret=link_secret_for(settings=self.settings),
                )
                self.sender = BlockingSender(delivery=delivery)
        return self.loaded

    def once(self) -> bool:
        """One pass; whether it found anything to do."""
        strategy, journeys = self._load()
        now = self.opened.clock.now()
        report = work_once(
            workspace=self.opened,
            strategy=strategy,
            journeys=journeys,
            now=now,
            batch=self.batch,
            worker_id=self.name,
            max_batches=1,
        )
        self.advanced += report.advanced
        claimed = 0
        if self.sender is not None:
            delivered = self.sender.deliver_due(workspace=self.opened, now=now, max_batches=1)
            self.sent += delivered.sent
            claimed = delivered.claimed
        return report.advanced > 0 or claimed > 0

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None
