"""`orbita journeys list|show|stats`: what the journeys are and what they did."""

from __future__ import annotations

from typing import Annotated

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
from orbita.core.errors import NotFoundError
from orbita.services.journey_stats import ArmStats, JourneyStats, journey_stats, journeys_stats
from orbita.services.journeys import load_journeys
from orbita.services.workspace import open_workspace

app = typer.Typer(help="Journeys: list them, show one's steps, and count what they did.")
NameArgument = Annotated[str, typer.Argument(help="The journey's name in the strategy.")]


def _rate(arm: ArmStats) -> str:
    rate = arm.conversion_rate
    return "-" if rate is None else f"{rate:.1%}"


def _uplift(stats: JourneyStats) -> str:
    uplift = stats.uplift
    return "-" if uplift is None else f"{uplift * 100:+.1f} pp"


@app.command("list")
def list_(workspace: WorkspaceOption = DEFAULT_WORKSPACE, as_json: JsonOption = False) -> None:
    """Every published journey: entered, in it now, sent, converted, uplift over holdout."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        found = journeys_stats(workspace=ws)
    if as_json:
        print_json([to_plain(s) | {"uplift": s.uplift} for s in found])
        return
    table = Table(
        "journey", "entered", "in it", "sent", "held back", "converted", "holdout conv.", "uplift"
    )
    for stats in found:
        treated, held = stats.arms["treatment"], stats.arms["holdout"]
        table.add_row(
            stats.name,
            f"{treated.entered + held.entered:,}",
            f"{stats.live:,}",
            f"{stats.sent:,}",
            f"{stats.suppressed:,}",
            f"{treated.converted:,} ({_rate(treated)})",
            f"{held.converted:,} ({_rate(held)})",
            _uplift(stats),
        )
    console().print(table)


@app.command("show")
def show(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """The journey's current version: trigger and steps, each with where it leads."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        published = load_journeys(workspace=ws)
        compiled = published.current.get(name)
        if compiled is None:
            known = ", ".join(sorted(published.current)) or "none"
            raise NotFoundError(f"unknown journey {name!r} (known: {known})")
    if as_json:
        print_json(
            {
                "name": name,
                "version": compiled.version,
                "definition": compiled.journey.model_dump(mode="json"),
            }
        )
        return
    out = console()
    journey = compiled.journey
    trigger = journey.trigger.model_dump(mode="json", exclude_defaults=True)
    out.print(f"{name} (version {compiled.version})", markup=False, highlight=False)
    out.print(f"trigger: {trigger}", markup=False, highlight=False)
    table = Table("step", "does", "then")
    for node in compiled.graph.nodes.values():
        edges = {label: target or "end" for label, target in node.edges.items()}
        following = ", ".join(f"{k} -> {v}" for k, v in edges.items()) or (node.next or "end")
        table.add_row(node.id, node.label(), following)
    out.print(table)


@app.command("stats")
def stats(
    name: NameArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Per step: waiting now, left by each edge, messages by template and variant; per arm:
    entered, converted and the uplift over the holdout."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        found = journey_stats(workspace=ws, name=name)
    if as_json:
        print_json(to_plain(found) | {"uplift": found.uplift})
        return
    out = console()
    arms = Table("arm", "entered", "converted", "rate", title=f"{name}: uplift {_uplift(found)}")
    for arm, counts in found.arms.items():
        arms.add_row(arm, f"{counts.entered:,}", f"{counts.converted:,}", _rate(counts))
    out.print(arms)
    steps = Table("step", "waiting", "left by", "messages")
    for step in found.steps:
        steps.add_row(
            step.node,
            f"{step.waiting:,}",
            ", ".join(f"{edge} {count:,}" for edge, count in sorted(step.passed.items())),
            ", ".join(f"{label} {count:,}" for label, count in sorted(step.messages.items())),
        )
    out.print(steps)
    if found.variants:
        variants = Table("variant", "runs sent it", "converted", "rate")
        for name_, counts in found.variants.items():
            variants.add_row(name_, f"{counts.entered:,}", f"{counts.converted:,}", _rate(counts))
        out.print(variants)
    if found.attributed:
        credited = Table("step", "variant", "arm", "attributed conversions", "revenue")
        for totals in found.attributed:
            credited.add_row(
                totals.node or "-",
                totals.variant or "-",
                totals.arm,
                f"{totals.conversions:,.2f}",
                f"{totals.revenue:,.2f}",
            )
        out.print(credited)
