"""The journey engine: (journey, run state, now, an event or the caller's facts) -> a new
state and commands. Pure: no I/O, no clock, no random state; the same inputs give the same
decision, so a worker that crashed can run a batch again and queue nothing twice.

    enter     entry rules, holdout arm, run id and key       -> an active run due now
    advance   run nodes from a due run until it must wait    -> sends, updates, schedule
    on_event  goal conversion, exit_on, a wait_for satisfied -> the run moves on (due now)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime

from orbita.core.errors import InvalidInputError
from orbita.engine.journeys.predicates import PatternMatcher
from orbita.engine.journeys.state import (
    CallWebhook,
    Command,
    Convert,
    Decision,
    Entered,
    Exit,
    Facts,
    NotEntered,
    Passed,
    RunContext,
    RunsSummary,
    RunState,
    RunStatus,
    Schedule,
    Send,
    Suppressed,
    UpdateTrait,
)
from orbita.engine.journeys.times import wait_until
from orbita.model.events import EventRecord
from orbita.model.journeys import (
    BranchStep,
    ExitStep,
    GotoStep,
    Journey,
    JourneyGraph,
    SendStep,
    SplitStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WebhookStep,
    journey_graph,
)

# A journey graph without waiting loops runs at most once through each node; this bounds
# what a loop through a date wait already past (which does not wait) could do.
MAX_NODES_PER_ADVANCE = 1000


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    """A journey of one published version, ready to run: its graph and compiled patterns."""

    name: str
    version: int
    journey: Journey
    graph: JourneyGraph
    exit_on: tuple[PatternMatcher, ...]
    goal: PatternMatcher | None
    waits_for: Mapping[str, PatternMatcher]
    correlated: tuple[str, ...]


def compile_journey(name: str, journey: Journey, *, version: int = 1) -> CompiledJourney:
    graph, problems = journey_graph(journey)
    if problems:
        raise InvalidInputError(problems, summary=f"invalid journey {name}")
    return CompiledJourney(
        name=name,
        version=version,
        journey=journey,
        graph=graph,
        exit_on=tuple(PatternMatcher(pattern) for pattern in journey.exit_on),
        goal=PatternMatcher(journey.goal) if journey.goal is not None else None,
        waits_for={
            node.id: PatternMatcher(node.step.pattern())
            for node in graph.nodes.values()
            if isinstance(node.step, WaitForStep)
        },
        correlated=journey.correlated_properties(),
    )


# --- deterministic numbers -----------------------------------------------------------------


def bucket(*parts: object) -> float:
    """A number in [0, 1) fixed by its parts: sticky holdout and split assignment with no
    random state to store (the same customer lands in the same arm on every worker)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _digest(*parts: object, size: int = 32) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:size]


def run_id_for(journey: str, customer: int, trigger_message_id: str) -> str:
    """The same trigger event enters the same run: a redelivered event is a no-op upstream."""
    return _digest("run", journey, customer, trigger_message_id, size=24)


def idempotency_key(state: RunState, *, node: str, occurrence: int) -> str:
    """(journey, version, customer, run key, node, occurrence): DESIGN.md's delivery key."""
    return _digest(
        state.journey, state.version, state.customer_id, state.run_id, state.key, node, occurrence
    )


def in_holdout(journey: CompiledJourney, customer: int) -> bool:
    """Per customer and journey, not per run or version: a control customer stays one."""
    return bucket("holdout", journey.name, customer) < journey.journey.holdout


def split_arm(journey: CompiledJourney, step: SplitStep, *, customer: int, node: str) -> str:
    point = bucket("split", journey.name, customer, node)
    total = 0.0
    for arm in step.arms:
        total += arm.percent
        if point < total:
            return arm.name
    return step.arms[-1].name  # rounding: percentages add up to 100%


# --- enter ---------------------------------------------------------------------------------


def enter(
    journey: CompiledJourney,
    *,
    customer: int,
    trigger_event: EventRecord,
    now: datetime,
    previous_runs_summary: RunsSummary,
) -> Decision:
    """Start a run for a customer the trigger matched, if the entry rules let them in.

    Non-event triggers (schedule, date, API) are given as an event the caller makes, whose
    message_id names the occurrence (`schedule:<journey>:<time>`), so runs stay idempotent.
    """
    entry = journey.journey.entry
    summary = previous_runs_summary
    properties = trigger_event.properties
    key: str | None = None
    if entry.key is not None:
        raw = properties.get(entry.key)
        if raw is None:
            return Decision(None, (NotEntered(f"the trigger event has no {entry.key}"),))
        key = str(raw)
    if entry.mode == "once" and summary.entries:
        return Decision(None, (NotEntered("once: entered before"),))
    if (
        entry.mode == "cooldown"
        and entry.cooldown is not None
        and summary.last_entered_at is not None
        and now - summary.last_entered_at < entry.cooldown
    ):
        return Decision(None, (NotEntered("cooldown"),))
    if key in summary.active_keys:
        return Decision(None, (NotEntered("already in the journey"),))
    holdout = in_holdout(journey, customer)
    state = RunState(
        journey=journey.name,
        version=journey.version,
        run_id=run_id_for(journey.name, customer, trigger_event.message_id),
        key=key,
        customer_id=customer,
        node=journey.graph.start,
        status="active",
        wake_at=now,
        entered_at=now,
        holdout=holdout,
        context=RunContext(
            trigger_message_id=trigger_event.message_id,
            trigger_event=trigger_event.name,
            properties=dict(properties),
            correlation={
                name: properties[name] for name in journey.correlated if name in properties
            },
        ),
    )
    return Decision(state, (Entered(run_id=state.run_id, holdout=holdout), Schedule(now)))


# --- advance -------------------------------------------------------------------------------


def _end(
    state: RunState, commands: list[Command], *, now: datetime, reason: str, exited: bool
) -> Decision:
    commands.append(Exit(reason))
    ended = replace(
        state,
        status="exited" if exited else "completed",
        wake_at=None,
        ended_at=now,
        exit_reason=reason,
    )
    return Decision(ended, tuple(commands))


def _next_state(
    state: RunState,
    *,
    visits: dict[str, int],
    variants: dict[str, str],
    node: str | None,
    status: RunStatus,
    wake_at: datetime | None,
    ended_at: datetime | None,
    exit_reason: str | None,
) -> RunState:
    """`dataclasses.replace` of the run and its context, as one constructor call each
    (replace took a sixth of a worker's time)."""
    context = state.context
    return RunState(
        journey=state.journey,
        version=state.version,
        run_id=state.run_id,
        key=state.key,
        customer_id=state.customer_id,
        node=node,
        status=status,
        wake_at=wake_at,
        entered_at=state.entered_at,
        holdout=state.holdout,
        context=RunContext(
            trigger_message_id=context.trigger_message_id,
            trigger_event=context.trigger_event,
            properties=context.properties,
            correlation=context.correlation,
            variants=variants,
            visits=visits,
        ),
        converted_at=state.converted_at,
        ended_at=ended_at,
        exit_reason=exit_reason,
    )


# _next_state names every field: a field added to a run must be added there too.
assert [f.name for f in fields(RunState)] == [
    "journey",
    "version",
    "run_id",
    "key",
    "customer_id",
    "node",
    "status",
    "wake_at",
    "entered_at",
    "holdout",
    "context",
    "converted_at",
    "ended_at",
    "exit_reason",
]
assert [f.name for f in fields(RunContext)] == [
    "trigger_message_id",
    "trigger_event",
    "properties",
    "correlation",
    "variants",
    "visits",
]


def advance(journey: CompiledJourney, state: RunState, *, now: datetime, facts: Facts) -> Decision:
    """Run a due run's nodes until it waits or ends; a run not yet due is left as it is."""
    if state.ended or state.wake_at is None or state.wake_at > now:
        return Decision(state)
    nodes = journey.graph.nodes
    commands: list[Command] = []
    visits = dict(state.context.visits)
    variants = dict(state.context.variants)
    node_id = state.node
    if state.status == "waiting" and node_id is not None:
        # The wait is over: a plain wait goes on, a wait_for timed out.
        waited = nodes[node_id]
        edge = "timeout" if isinstance(waited.step, WaitForStep) else "next"
        commands.append(Passed(waited.id, edge))
        node_id = waited.edges[edge] if edge == "timeout" else waited.next

    def moved(
        *, node: str | None, status: RunStatus | None = None, wake_at: datetime | None = None
    ) -> RunState:
        return _next_state(
            state,
            visits=visits,
            variants=variants,
            node=node,
            status=status or state.status,
            wake_at=wake_at if wake_at is not None else state.wake_at,
            ended_at=state.ended_at,
            exit_reason=state.exit_reason,
        )

    def ended(*, node: str | None, reason: str, exited: bool) -> Decision:
        commands.append(Exit(reason))
        final = _next_state(
            state,
            visits=visits,
            variants=variants,
            node=node,
            status="exited" if exited else "completed",
            wake_at=None,
            ended_at=now,
            exit_reason=reason,
        )
        return Decision(final, tuple(commands))

    for _ in range(MAX_NODES_PER_ADVANCE):
        if node_id is None:
            return ended(node=None, reason="completed", exited=False)
        node = nodes[node_id]
        step = node.step
        occurrence = visits[node_id] = visits.get(node_id, 0) + 1
        edge = "next"
        target = node.next
        if isinstance(step, WaitStep):
            wake = wait_until(
                step,
                now=now,
                timezone=facts.timezone,
                trait=facts.trait(step.until_trait) if step.until_trait else None,
            )
            if wake > now:
                commands.append(Schedule(wake))
                return Decision(
                    moved(node=node_id, status="waiting", wake_at=wake), tuple(commands)
                )
        elif isinstance(step, WaitForStep):
            wake = now + step.timeout
            commands.append(Schedule(wake))
            return Decision(moved(node=node_id, status="waiting", wake_at=wake), tuple(commands))
        elif isinstance(step, SendStep):
            key = idempotency_key(state, node=node_id, occurrence=occurrence)
            variant = step.variant or _latest_variant(variants)
            if state.holdout:
                commands.append(
                    Suppressed(
                        reason="holdout",
                        node=node_id,
                        idempotency_key=key,
                        template=step.template,
                        channel=step.channel,
                        variant=variant,
                    )
                )
            else:
                commands.append(
                    Send(
                        channel=step.channel,
                        template=step.template,
                        variant=variant,
                        idempotency_key=key,
                        node=node_id,
                    )
                )
        elif isinstance(step, UpdateStep):
            # Trait updates are bookkeeping, applied in both arms (the holdout's profile
            # stays comparable); messages and webhooks are what the control arm never gets.
            key = idempotency_key(state, node=node_id, occurrence=occurrence)
            commands.append(
                UpdateTrait(
                    trait=step.trait,
                    idempotency_key=key,
                    node=node_id,
                    value=step.set,
                    increment=step.increment,
                )
            )
        elif isinstance(step, WebhookStep):
            key = idempotency_key(state, node=node_id, occurrence=occurrence)
            if state.holdout:
                commands.append(Suppressed(reason="holdout", node=node_id, idempotency_key=key))
            else:
                commands.append(
                    CallWebhook(
                        url=step.url,
                        method=step.method,
                        body=step.body,
                        idempotency_key=key,
                        node=node_id,
                    )
                )
        elif isinstance(step, GotoStep):
            edge, target = "goto", node.edges["goto"]
        elif isinstance(step, ExitStep):
            commands.append(Passed(node_id, "exit"))
            return ended(node=node_id, reason=step.reason, exited=True)
        elif isinstance(step, BranchStep):
            edge = "else"
            for index, arm in enumerate(step.arms):
                if facts.holds(arm.when, now=now):
                    edge = f"when.{index}"
                    break
            target = node.edges[edge]
        elif isinstance(step, SplitStep):
            edge = variants.get(node_id) or split_arm(
                journey, step, customer=state.customer_id, node=node_id
            )
            variants[node_id] = edge
            target = node.edges[edge]
        commands.append(Passed(node_id, edge))
        node_id = target
    return ended(
        node=node_id,
        reason=f"stopped after {MAX_NODES_PER_ADVANCE} steps without a wait",
        exited=True,
    )


def _latest_variant(variants: Mapping[str, str]) -> str | None:
    """The arm of the split the run passed last (dicts keep insertion order)."""
    return list(variants.values())[-1] if variants else None


# --- events --------------------------------------------------------------------------------


def on_event(
    journey: CompiledJourney, state: RunState, event: EventRecord, *, now: datetime
) -> Decision:
    """An event of the run's customer: conversion, exit, or the end of a wait_for.

    The trigger event itself and events from before the run started change nothing.
    """
    if event.message_id == state.context.trigger_message_id or event.timestamp < state.entered_at:
        return Decision(state)
    commands: list[Command] = []
    goal = journey.journey.goal
    correlation = state.context.correlation
    if (
        goal is not None
        and journey.goal is not None
        and state.converted_at is None
        and event.timestamp <= state.entered_at + goal.within
        and journey.goal.matches(event, correlation=correlation)
    ):
        commands.append(Convert(at=event.timestamp, message_id=event.message_id))
        state = replace(state, converted_at=event.timestamp)
        if goal.exit and not state.ended:
            return _end(state, commands, now=now, reason="goal", exited=True)
    if state.ended:
        return Decision(state, tuple(commands))
    for pattern in journey.exit_on:
        if pattern.matches(event, correlation=correlation):
            return _end(state, commands, now=now, reason=f"exit_on {event.name}", exited=True)
    waiting = state.node if state.status == "waiting" else None
    matcher = journey.waits_for.get(waiting) if waiting is not None else None
    if (
        matcher is not None
        and waiting is not None
        and state.wake_at is not None
        and event.timestamp <= state.wake_at  # a timeout already due wins
        and matcher.matches(event, correlation=correlation)
    ):
        node = journey.graph.nodes[waiting]
        commands.append(Passed(waiting, "event"))
        following = node.edges["event"]
        if following is None:
            return _end(state, commands, now=now, reason="completed", exited=False)
        commands.append(Schedule(now))
        state = replace(state, node=following, status="active", wake_at=now)
    return Decision(state, tuple(commands))
