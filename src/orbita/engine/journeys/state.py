"""A customer's run through a journey as one frozen value, and what the engine decides.

A run is a row (DESIGN.md, Journeys at scale): `node` is where it stands, `wake_at` when a
worker should look at it again. `active` runs are due at `wake_at` to execute `node`;
`waiting` runs sit at a wait or wait_for node until `wake_at` (a wait_for also until its
event); `completed` and `exited` runs are kept while their goal window is open, so a late
purchase still counts as a conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from orbita.model.segments import Condition

RunStatus = Literal["active", "waiting", "completed", "exited"]
ENDED: frozenset[str] = frozenset({"completed", "exited"})


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a run remembers: its trigger, the values it correlates on, the split arms it
    took (node -> arm) and how often it executed each node (for idempotency keys)."""

    trigger_message_id: str
    trigger_event: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    correlation: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, str] = field(default_factory=dict)
    visits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunState:
    journey: str
    version: int
    run_id: str
    key: str | None
    customer_id: int
    node: str | None
    status: RunStatus
    wake_at: datetime | None
    entered_at: datetime
    holdout: bool
    context: RunContext
    converted_at: datetime | None = None
    ended_at: datetime | None = None
    exit_reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def to_json(self) -> dict[str, Any]:
        """The row's columns and its JSON context (datetimes as ISO text)."""
        return {
            "journey": self.journey,
            "version": self.version,
            "run_id": self.run_id,
            "key": self.key,
            "customer_id": self.customer_id,
            "node": self.node,
            "status": self.status,
            "wake_at": _iso(self.wake_at),
            "entered_at": self.entered_at.isoformat(),
            "holdout": self.holdout,
            "converted_at": _iso(self.converted_at),
            "ended_at": _iso(self.ended_at),
            "exit_reason": self.exit_reason,
            "context": {
                "trigger_message_id": self.context.trigger_message_id,
                "trigger_event": self.context.trigger_event,
                "properties": dict(self.context.properties),
                "correlation": dict(self.context.correlation),
                "variants": dict(self.context.variants),
                "visits": dict(self.context.visits),
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        context = data["context"]
        return cls(
            journey=data["journey"],
            version=int(data["version"]),
            run_id=data["run_id"],
            key=data["key"],
            customer_id=data["customer_id"],
            node=data["node"],
            status=data["status"],
            wake_at=_time(data["wake_at"]),
            entered_at=datetime.fromisoformat(data["entered_at"]),
            holdout=bool(data["holdout"]),
            converted_at=_time(data["converted_at"]),
            ended_at=_time(data["ended_at"]),
            exit_reason=data["exit_reason"],
            context=RunContext(
                trigger_message_id=context["trigger_message_id"],
                trigger_event=context["trigger_event"],
                properties=dict(context["properties"]),
                correlation=dict(context["correlation"]),
                variants=dict(context["variants"]),
                visits={key: int(value) for key, value in context["visits"].items()},
            ),
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class RunsSummary:
    """What the caller knows of a customer's earlier runs of this journey (any version):
    how many there were, when the last one started, and the keys of those still running
    (None for an unkeyed run)."""

    entries: int = 0
    last_entered_at: datetime | None = None
    active_keys: frozenset[str | None] = frozenset()


class Facts(Protocol):
    """What the caller knows about one customer at `now`: the engine asks, the caller
    answers from its stores (segment membership, traits, event aggregates)."""

    @property
    def timezone(self) -> str:
        """The customer's IANA time zone, or the workspace's when they have none."""
        ...

    def holds(self, condition: Condition, *, now: datetime) -> bool: ...

    def trait(self, name: str) -> object: ...


# --- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entered:
    run_id: str
    holdout: bool


@dataclass(frozen=True, slots=True)
class NotEntered:
    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    """Queue a message in the outbox; the key makes a second queueing a no-op."""

    channel: str | None
    template: str
    variant: str | None
    idempotency_key: str
    node: str


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A send (or webhook) the run would have made but must not: recorded for measurement."""

    reason: str
    node: str
    idempotency_key: str
    template: str | None = None
    channel: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateTrait:
    trait: str
    idempotency_key: str
    node: str
    value: str | bool | int | float | None = None
    increment: float | None = None


@dataclass(frozen=True, slots=True)
class CallWebhook:
    url: str
    method: str
    body: Mapping[str, Any] | None
    idempotency_key: str
    node: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """Look at the run again at `wake_at`."""

    wake_at: datetime


@dataclass(frozen=True, slots=True)
class Exit:
    """The run ended: `completed` (the steps ran out) or why it stopped early."""

    reason: str


@dataclass(frozen=True, slots=True)
class Convert:
    """The goal event came within the window: the run (treatment or holdout) converted."""

    at: datetime
    message_id: str


@dataclass(frozen=True, slots=True)
class Passed:
    """The run left `node` along `edge` (`next`, `event`, `timeout`, `when.0`, `else`, an
    arm name, `goto`): what per-node journey statistics count."""

    node: str
    edge: str


Command = (
    Entered
    | NotEntered
    | Send
    | Suppressed
    | UpdateTrait
    | CallWebhook
    | Schedule
    | Exit
    | Convert
    | Passed
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The run's new state (None when no run was started) and what to do about it."""

    state: RunState | None
    commands: tuple[Command, ...] = ()


def unchanged(state: RunState) -> Decision:
    return Decision(state=state)
