"""What the journeys did: per journey, per arm (treatment or holdout), per step and variant.

    entered     runs started, by arm
    waiting     live runs now, by step
    passed      runs that left a step, by the edge they took (next, when.0, else, event, …)
    messages    outbox rows by step, template and variant (sent, or suppressed for the holdout)
    converted   runs that reached the goal within its window, by arm

Conversion rates per arm and their difference (the journey's uplift against its holdout)
come from the same counts; intervals, tests and verdicts are orbita.analytics.experiments'.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, case, func, select

from orbita.analytics.experiments.data import journey_names, variant_counts
from orbita.core.errors import NotFoundError
from orbita.services.attribution import AttributedTotals, attribution_summary
from orbita.services.workspace import Workspace
from orbita.store.state import (
    LIVE_RUNS,
    journey_conversions,
    journey_runs,
    journey_steps,
    journey_versions,
    outbox,
)

ARMS = ("treatment", "holdout")


@dataclass(frozen=True, slots=True)
class ArmStats:
    entered: int
    converted: int

    @property
    def conversion_rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


@dataclass(frozen=True, slots=True)
class StepStats:
    node: str
    waiting: int
    passed: dict[str, int]  # edge -> runs
    messages: dict[str, int]  # "template" or "template/variant" -> rows (sends + suppressed)


@dataclass(frozen=True, slots=True)
class JourneyStats:
    name: str
    versions: int
    live: int
    ended: int
    arms: dict[str, ArmStats]
    sent: int  # send and webhook rows of the treatment arm
    suppressed: int
    steps: list[StepStats] = field(default_factory=list)
    # A/B variants (split arms): runs sent that variant, and how many of them converted.
    variants: dict[str, ArmStats] = field(default_factory=dict)
    # Goal events credited to its messages (per step and variant) and to its holdout arm.
    attributed: list[AttributedTotals] = field(default_factory=list)

    @property
    def uplift(self) -> float | None:
        """Treatment minus holdout conversion rate (None without both arms)."""
        treated, held = self.arms["treatment"].conversion_rate, self.arms["holdout"].conversion_rate
        return treated - held if treated is not None and held is not None else None


def journeys_stats(
    *, workspace: Workspace, names: Sequence[str] | None = None
) -> list[JourneyStats]:
    """Counts for every published journey (or `names`), without per-step detail."""
    with workspace.state.connect() as connection:
        known = journey_names(connection)
        wanted = known if names is None else [n for n in names if n in known]
        return [_summary(connection, name) for name in wanted]


def journey_stats(*, workspace: Workspace, name: str) -> JourneyStats:
    """One journey's counts with the per-step detail."""
    with workspace.state.connect() as connection:
        known = journey_names(connection)
        if name not in known:
            listed = ", ".join(known) or "none is published: run `orbita apply FILE`"
            raise NotFoundError(f"unknown journey {name!r} (known: {listed})")
        summary = _summary(connection, name)
        return JourneyStats(
            name=summary.name,
            versions=summary.versions,
            live=summary.live,
            ended=summary.ended,
            arms=summary.arms,
            sent=summary.sent,
            suppressed=summary.suppressed,
            steps=_steps(connection, name),
            variants=_variants(connection, name),
            attributed=attribution_summary(workspace=workspace, journey=name),
        )


def _summary(connection: Connection, name: str) -> JourneyStats:
    versions = connection.execute(
        select(func.count()).where(journey_versions.c.journey == name)
    ).scalar_one()
    runs = journey_runs.c
    live_flag = case((LIVE_RUNS, 1), else_=0)
    entered: dict[str, int] = defaultdict(int)
    live = ended = 0
    query = (
        select(runs.holdout, func.count(), func.sum(live_flag))
        .where(runs.journey == name)
        .group_by(runs.holdout)
    )
    for holdout, count, live_count in connection.execute(query):
        entered["holdout" if holdout else "treatment"] += int(count)
        live += int(live_count or 0)
        ended += int(count) - int(live_count or 0)
    conversions: dict[str, int] = dict(
        connection.execute(
            select(journey_conversions.c.arm, func.count())
            .where(journey_conversions.c.journey == name)
            .group_by(journey_conversions.c.arm)
        ).all()
    )
    kinds: dict[str, int] = dict(
        connection.execute(
            select(outbox.c.kind, func.count())
            .where(outbox.c.journey == name)
            .group_by(outbox.c.kind)
        ).all()
    )
    return JourneyStats(
        name=name,
        versions=int(versions),
        live=live,
        ended=ended,
        arms={arm: ArmStats(entered[arm], int(conversions.get(arm, 0))) for arm in ARMS},
        sent=int(kinds.get("send", 0)) + int(kinds.get("webhook", 0)),
        suppressed=int(kinds.get("suppressed", 0)),
    )


def _steps(connection: Connection, name: str) -> list[StepStats]:
    waiting: dict[str, int] = {}
    passed: dict[str, dict[str, int]] = defaultdict(dict)
    messages: dict[str, dict[str, int]] = defaultdict(dict)
    runs = journey_runs.c
    for node, count in connection.execute(
        select(runs.node, func.count()).where(runs.journey == name, LIVE_RUNS).group_by(runs.node)
    ):
        if node is not None:
            waiting[node] = int(count)
    steps = journey_steps.c
    for node, edge, count in connection.execute(
        select(steps.node, steps.edge, func.count())
        .where(steps.journey == name)
        .group_by(steps.node, steps.edge)
    ):
        passed[node][edge] = int(count)
    rows = outbox.c
    for node, template, variant, count in connection.execute(
        select(rows.node, rows.template, rows.variant, func.count())
        .where(rows.journey == name)
        .group_by(rows.node, rows.template, rows.variant)
    ):
        label = (template or "webhook") + (f"/{variant}" if variant else "")
        messages[node][label] = int(count)
    nodes = sorted(set(waiting) | set(passed) | set(messages), key=_node_order)
    return [
        StepStats(node, waiting.get(node, 0), dict(passed[node]), dict(messages[node]))
        for node in nodes
    ]


def _variants(connection: Connection, name: str) -> dict[str, ArmStats]:
    return {
        variant: ArmStats(entered=counts.runs, converted=counts.converted)
        for variant, counts in variant_counts(connection, name).items()
    }


def _node_order(node: str) -> tuple[int, str]:
    """Steps in path order (`steps[2]` before `steps[10]`), named steps after."""
    digits = "".join(ch if ch.isdigit() else " " for ch in node).split()
    return (int(digits[0]) if digits else 1_000_000, node)
