"""`orbita broadcasts list|show|plan|send|pause|resume|cancel|report`: one message to a
whole audience, its dry run, its control while it goes out, and what it did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

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
from orbita.services.apply import applied_strategy, strategy_in_use
from orbita.services.broadcasts import (
    broadcast_report,
    cancel_broadcast,
    list_broadcasts,
    pause_broadcast,
    plan_broadcast,
    resume_broadcast,
    send_broadcast,
    show_broadcast,
)
from orbita.services.workspace import open_workspace

app = typer.Typer(help="Broadcasts: plan one (a dry run), send, pause, resume, cancel, report.")
NameArgument = Annotated[str, typer.Argument(help="The broadcast's name in the strategy.")]
StrategyOption = Annotated[
    Path | None,
    typer.Option(
        "--strategy",
        help="Strategy file (default: the applied one, else <workspace>/strategy.yaml).",
        dir_okay=False,
    ),
]
OccurrenceOption = Annotated[
    str | None,
    typer.Option(
        "--occurrence", help="Which occurrence (its time, or its id); default: the newest."
    ),
]


def _print(value: Any) -> None:
    console().print(value, markup=False, highlight=False)


@app.command("list")
def list_(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every broadcast: its schedule and its latest occurrence's state."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        _, loaded = strategy_in_use(settings=ws.settings, path=strategy)
        found = list_broadcasts(workspace=ws, strategy=loaded)
    if as_json:
        print_json(found)
        return
    table = Table("broadcast", "schedule", "occurrences", "latest", "state", "audience")
    for row in found:
        latest = row["latest"] or {}
        table.add_row(
            row["name"],
            row["schedule"],
            str(row["occurrences"]),
            str(latest.get("occurrence", "-")),
            str(latest.get("state", "not sent")),
            f"{latest['audience']:,}" if latest.get("audience") is not None else "-",
        )
    console().print(table)


@app.command("show")
def show(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The broadcast's definition and each of its occurrences."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        _, loaded = strategy_in_use(settings=ws.settings, path=strategy)
        found = show_broadcast(workspace=ws, strategy=loaded, name=name)
    if as_json:
        print_json(found)
        return
    _print(f"{name}: {found['schedule']}")
    for key, value in found["definition"].items():
        _print(f"  {key}: {value}")
    table = Table("id", "occurrence", "state", "audience", "decision")
    for occurrence in found["occurrences"]:
        decision = occurrence["decision"] or {}
        table.add_row(
            str(occurrence["broadcast_id"]),
            occurrence["occurrence"],
            occurrence["state"],
            f"{occurrence['audience']:,}" if occurrence["audience"] is not None else "-",
            str(decision.get("winner", "-")),
        )
    console().print(table)


@app.command("plan")
def plan(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A dry run: audience size, per variant and time zone, who the sender's rules would
    hold back and why, and a rendered sample. Nothing is written or sent."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        path, loaded = strategy_in_use(settings=ws.settings, path=strategy)
        found = plan_broadcast(
            workspace=ws, strategy=loaded, base_dir=path.parent, name=name, now=ws.clock.now()
        )
    if as_json:
        print_json(to_plain(found))
        return
    _print(
        f"{name} ({found.occurrence}): audience {found.audience:,}, holdout {found.holdout:,}, "
        f"deliverable {found.deliverable:,}"
    )
    if found.first_at is not None and found.last_at is not None:
        _print(f"sends from {found.first_at.isoformat()} to {found.last_at.isoformat()}")
    if found.decide_at is not None:
        _print(f"A/B decision at {found.decide_at.isoformat()}")
    counts = Table("variant", "customers")
    for arm, count in found.by_arm.items():
        counts.add_row(arm, f"{count:,}")
    console().print(counts)
    zones = Table("time zone", "customers")
    for zone, count in found.by_zone.items():
        zones.add_row(zone, f"{count:,}")
    console().print(zones)
    excluded = Table("held back by", "customers")
    for reason, count in found.excluded.items():
        excluded.add_row(reason, f"{count:,}")
    if not found.excluded:
        excluded.add_row("(nobody)", "0")
    console().print(excluded)
    for arm, sample in found.samples.items():
        _print(f"--- {arm}, to {sample['to']} (customer #{sample['customer_id']})")
        if sample["subject"]:
            _print(f"Subject: {sample['subject']}")
        _print(sample["text"])


@app.command("send")
def send(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write its recipients to the outbox now (a scheduled one keeps its times); the sender
    delivers them. Sending again writes nobody twice."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        _, loaded = strategy_in_use(settings=ws.settings, path=strategy)
        applied = applied_strategy(workspace=ws)
        report = send_broadcast(
            workspace=ws,
            strategy=loaded,
            name=name,
            now=ws.clock.now(),
            version=applied.version if applied is not None and strategy is None else None,
        )
    if as_json:
        print_json(
            {
                **report.occurrence.summary(),
                "written": report.written,
                "holdout": report.holdout,
                "sample": report.sample,
                "rest": report.rest,
                "by_arm": dict(report.by_arm),
            }
        )
        return
    arms = ", ".join(f"{arm} {count:,}" for arm, count in sorted(report.by_arm.items()))
    _print(
        f"{name} ({report.occurrence.occurrence}): {report.audience:,} in the audience, "
        f"{report.written:,} written now; {arms}"
    )


@app.command("pause")
def pause(
    name: NameArgument,
    occurrence: OccurrenceOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """The sender skips its messages until `resume`; nothing is lost."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        found = pause_broadcast(workspace=ws, name=name, now=ws.clock.now(), occurrence=occurrence)
    _print(f"{name} ({found.occurrence}): paused")


@app.command("resume")
def resume(
    name: NameArgument,
    occurrence: OccurrenceOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
) -> None:
    """Go on where it stopped."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        _, loaded = strategy_in_use(settings=ws.settings, path=strategy)
        found = resume_broadcast(
            workspace=ws, strategy=loaded, name=name, now=ws.clock.now(), occurrence=occurrence
        )
    _print(f"{name} ({found.occurrence}): {found.state}")


@app.command("cancel")
def cancel(
    name: NameArgument,
    occurrence: OccurrenceOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Send nothing more: every message not sent yet is cancelled."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        found, cancelled = cancel_broadcast(
            workspace=ws, name=name, now=ws.clock.now(), occurrence=occurrence
        )
    _print(f"{name} ({found.occurrence}): cancelled, {cancelled:,} messages not sent")


@app.command("report")
def report(
    name: NameArgument,
    occurrence: OccurrenceOption = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Audience, sent, delivered, opens, clicks, conversions, revenue, unsubscribes per
    variant and holdout, and the A/B test's decision."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        found = broadcast_report(workspace=ws, name=name, now=ws.clock.now(), occurrence=occurrence)
    if as_json:
        print_json(found)
        return
    _print(f"{name} ({found['occurrence']}): {found['state']}, audience {found['audience'] or 0:,}")
    columns = ("recipients", "sent", "delivered", "opens", "clicks", "conversions", "revenue")
    table = Table("arm", "to", "sent", "deliv.", "opens", "clicks", "conv.", "revenue", "unsub.")
    for arm in found["arms"]:
        table.add_row(arm["arm"], *(f"{arm[c]:,}" for c in columns), f"{arm['unsubscribes']:,}")
    console().print(table)
    decision = found["experiment"]
    if decision:
        _print(f"A/B: {decision['winner']} — {decision['reason']}")
