"""A small in-memory loop that plays a scenario file through the real journey engine.

It is test scaffolding, not a mock: the engine's `enter`, `advance` and `on_event` decide
everything; this loop only does what the integration layer will do with rows and an
outbox — keep runs in a dict, wake them in time order, apply trait updates, answer branch
conditions with the segment reference evaluator, fire schedule and date triggers, and
write down the commands a marketer cares about.

Scenario file (YAML):
    scenario: what it shows
    start: "2025-03-03T08:00:00+00:00"
    timezone: Europe/Kyiv                     # the workspace's zone
    segments: {name: condition}               # optional, for branch conditions
    customers: {1: {timezone: Europe/Kyiv, traits: {…}}}
    journeys: {name: journey in strategy syntax}
    timeline:                                 # in time order
      - {at: …, customer: 1, event: "Product Added", properties: {cart_id: c1}}
      - {at: …, customer: 1, identify: {credit_score: 540}}
      - {at: …, customer: 1, segment_entered: champions}    (or segment_exited)
      - {at: …, customer: 1, api: journey_name, properties: {…}}
      - {until: …}                            # move the clock
    expect:                                   # every send / suppressed / exit / conversion…
      - {at: …, customer: 1, send: cart_reminder}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from orbita.engine.journeys import (
    CallWebhook,
    Command,
    CompiledJourney,
    Convert,
    Decision,
    Exit,
    NotEntered,
    RunsSummary,
    RunState,
    Send,
    Suppressed,
    UpdateTrait,
    advance,
    compile_journey,
    compile_triggers,
    enter,
    next_cron_time,
    next_date_trigger,
    on_event,
)
from orbita.engine.segments.reference import ReferenceData, evaluate
from orbita.model.events import EventRecord
from orbita.model.journeys import parse_journey
from orbita.model.segments import Condition, Segment, parse_segment
from orbita.model.triggers import (
    SEGMENT_ENTERED_EVENT,
    SEGMENT_EXITED_EVENT,
    DateTrigger,
    ScheduleTrigger,
)

SCENARIOS = Path(__file__).parent / "scenarios"


def moment(value: object) -> datetime:
    """Scenario times: ISO text with an offset (or a YAML timestamp), never naive."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"scenario time {value!r} needs an offset, such as +00:00")
    return parsed.astimezone(UTC)


@dataclass
class Customer:
    id: int
    timezone: str | None
    traits: dict[str, Any]


@dataclass
class ScenarioFacts:
    """The engine's `Facts` for one customer, answered from the scenario's data."""

    sim: Simulation
    customer: Customer

    @property
    def timezone(self) -> str:
        return self.customer.timezone or self.sim.timezone

    def holds(self, condition: Condition, *, now: datetime) -> bool:
        data = ReferenceData(
            events=[row for row in self.sim.event_rows if row["timestamp"] <= now],
            customers=[
                {"customer_id": c.id, "timezone": c.timezone, "traits": c.traits}
                for c in self.sim.customers.values()
            ],
        )
        members = evaluate(condition, as_of=now, data=data, segments=self.sim.segments)
        return self.customer.id in members

    def trait(self, name: str) -> object:
        return self.customer.traits.get(name)


@dataclass
class Simulation:
    journeys: dict[str, CompiledJourney]
    customers: dict[int, Customer]
    timezone: str
    segments: dict[str, Segment]
    start: datetime
    runs: dict[str, RunState] = field(default_factory=dict)
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)
    timers: dict[tuple[str, int], datetime] = field(default_factory=dict)
    counter: int = 0

    def __post_init__(self) -> None:
        self.matcher = compile_triggers({n: j.journey for n, j in self.journeys.items()})
        for name in self.journeys:
            for customer in self.customers.values():
                self._set_timer(name, customer, after=self.start)

    # --- scheduled triggers (the scheduler's job in production) ----------------------------

    def _set_timer(self, name: str, customer: Customer, *, after: datetime) -> None:
        trigger = self.journeys[name].journey.trigger
        zone = customer.timezone or self.timezone
        fire: datetime | None = None
        if isinstance(trigger, ScheduleTrigger):
            if trigger.timezone == "workspace":
                zone = self.timezone
            elif trigger.timezone != "customer":
                zone = trigger.timezone
            fire = next_cron_time(trigger.cron, after=after, timezone=zone)
        elif isinstance(trigger, DateTrigger):
            value = customer.traits.get(trigger.trait)
            fire = next_date_trigger(trigger, value=value, after=after, timezone=zone)
        if fire is not None:
            self.timers[(name, customer.id)] = fire
        else:
            self.timers.pop((name, customer.id), None)

    def _fire(self, name: str, customer: Customer, now: datetime) -> None:
        trigger = self.journeys[name].journey.trigger
        self._set_timer(name, customer, after=now)
        if isinstance(trigger, ScheduleTrigger) and trigger.segment is not None:
            facts = ScenarioFacts(self, customer)
            if not facts.holds(self.segments[trigger.segment].condition, now=now):
                return
        record = self._record(
            customer.id,
            name=f"{name} due",
            properties={},
            at=now,
            message_id=f"{trigger.type}:{name}:{customer.id}:{now.isoformat()}",
        )
        self._enter(name, customer, record, now, scheduled=True)

    # --- the loop ---------------------------------------------------------------------------

    def run_due(self, *, until: datetime, inclusive: bool) -> None:
        """Wake every run and fire every timer due before `until`, earliest first."""
        while True:
            due: list[tuple[datetime, int, str, Any]] = []
            for run in self.runs.values():
                if not run.ended and run.wake_at is not None:
                    due.append((run.wake_at, 0, run.run_id, run))
            for (name, customer_id), fire in self.timers.items():
                due.append((fire, 1, f"{name}:{customer_id}", (name, customer_id)))
            due = [d for d in due if d[0] < until or (inclusive and d[0] == until)]
            if not due:
                return
            when, kind, _, what = min(due, key=lambda d: d[:3])
            if kind == 0:
                self._advance(what, when)
            else:
                name, customer_id = what
                self._fire(name, self.customers[customer_id], when)

    def _advance(self, state: RunState, now: datetime) -> None:
        journey = self.journeys[state.journey]
        facts = ScenarioFacts(self, self.customers[state.customer_id])
        decision = advance(journey, state, now=now, facts=facts)
        # Pure: the same inputs give the same decision (a re-run batch queues nothing new).
        assert advance(journey, state, now=now, facts=facts) == decision
        self._apply(decision, now)

    def _apply(self, decision: Decision, now: datetime) -> None:
        state = decision.state
        if state is None:
            return
        assert RunState.from_json(state.to_json()) == state  # the row format loses nothing
        self.runs[state.run_id] = state
        for command in decision.commands:
            self._note(state.journey, state.customer_id, command, now)
        if not state.ended and state.wake_at is not None and state.wake_at <= now:
            self._advance(state, now)  # due now: a worker picks it up at once

    def _note(self, journey: str, customer: int, command: Command, now: datetime) -> None:
        line: dict[str, Any] = {"at": now, "customer": customer, "journey": journey}
        if isinstance(command, Send):
            line["send"] = command.template
            if command.channel:
                line["channel"] = command.channel
            if command.variant:
                line["variant"] = command.variant
        elif isinstance(command, Suppressed):
            line["suppressed"] = command.template or "webhook"
            line["reason"] = command.reason
        elif isinstance(command, Exit):
            line["exit"] = command.reason
        elif isinstance(command, Convert):
            line["convert"] = True
        elif isinstance(command, NotEntered):
            line["not_entered"] = command.reason
        elif isinstance(command, UpdateTrait):
            traits = self.customers[customer].traits
            if command.increment is not None:
                traits[command.trait] = (traits.get(command.trait) or 0) + command.increment
            else:
                traits[command.trait] = command.value
            line["update"] = f"{command.trait}={traits[command.trait]}"
        elif isinstance(command, CallWebhook):
            line["webhook"] = command.url
        else:
            return
        self.output.append(line)

    def _record(
        self,
        customer: int,
        *,
        name: str,
        properties: Mapping[str, Any],
        at: datetime,
        message_id: str | None = None,
    ) -> EventRecord:
        self.counter += 1
        return EventRecord(
            message_id=message_id or f"m{self.counter}",
            type="track",
            name=name,
            user_id=str(customer),
            anonymous_id=None,
            properties=dict(properties),
            context={},
            timestamp=at,
            received_at=at,
        )

    def _summary(self, name: str, customer: int) -> RunsSummary:
        runs = [r for r in self.runs.values() if r.journey == name and r.customer_id == customer]
        return RunsSummary(
            entries=len(runs),
            last_entered_at=max((r.entered_at for r in runs), default=None),
            active_keys=frozenset(r.key for r in runs if not r.ended),
        )

    def _enter(
        self,
        name: str,
        customer: Customer,
        record: EventRecord,
        now: datetime,
        *,
        scheduled: bool = False,
    ) -> None:
        journey = self.journeys[name]
        decision = enter(
            journey,
            customer=customer.id,
            trigger_event=record,
            now=now,
            previous_runs_summary=self._summary(name, customer.id),
        )
        for command in decision.commands:
            # A scheduler asks every day; its refusals (cooldown, once) are not news.
            if not (scheduled and isinstance(command, NotEntered)):
                self._note(name, customer.id, command, now)
        if decision.state is not None:
            self._apply(Decision(decision.state), now)

    def event(self, customer: Customer, record: EventRecord) -> None:
        now = record.timestamp
        self.event_rows.append(
            {
                "customer_id": customer.id,
                "message_id": record.message_id,
                "type": record.type,
                "name": record.name,
                "properties": dict(record.properties),
                "timestamp": now,
            }
        )
        # Ingestion: the customer's runs see the event first, then triggers start new runs.
        for state in list(self.runs.values()):
            if state.customer_id != customer.id:
                continue
            decision = on_event(self.journeys[state.journey], state, record, now=now)
            self._apply(decision, now)
        for name, matched in self.matcher.match([record]):
            self._enter(name, customer, matched, now)

    def play(self, timeline: list[dict[str, Any]]) -> None:
        last = self.start
        for item in timeline:
            if "until" in item:
                until = moment(item["until"])
                self.run_due(until=until, inclusive=True)
                last = until
                continue
            now = moment(item["at"])
            assert now >= last, f"timeline goes back in time at {item}"
            self.run_due(until=now, inclusive=False)
            last = now
            customer = self.customers[int(item["customer"])]
            if "event" in item:
                props = item.get("properties", {})
                self.event(
                    customer,
                    self._record(customer.id, name=item["event"], properties=props, at=now),
                )
            elif "identify" in item:
                customer.traits.update(item["identify"])
            elif "segment_entered" in item or "segment_exited" in item:
                entered = "segment_entered" in item
                segment = item["segment_entered" if entered else "segment_exited"]
                name = SEGMENT_ENTERED_EVENT if entered else SEGMENT_EXITED_EVENT
                record = self._record(
                    customer.id, name=name, properties={"segment": segment}, at=now
                )
                self.event(customer, record)
            elif "api" in item:
                props = item.get("properties", {})
                record = self._record(customer.id, name="API Trigger", properties=props, at=now)
                self._enter(item["api"], customer, record, now)
            else:
                raise ValueError(f"unknown timeline item {item}")


def load(path: Path) -> tuple[Simulation, dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    segments = {
        name: parse_segment(spec, name=name) for name, spec in (data.get("segments") or {}).items()
    }
    journeys = {
        name: compile_journey(name, parse_journey(spec, name=name))
        for name, spec in data["journeys"].items()
    }
    customers = {
        int(cid): Customer(
            id=int(cid), timezone=spec.get("timezone"), traits=dict(spec.get("traits") or {})
        )
        for cid, spec in (data.get("customers") or {}).items()
    }
    sim = Simulation(
        journeys=journeys,
        customers=customers,
        timezone=data.get("timezone", "UTC"),
        segments=segments,
        start=moment(data["start"]),
    )
    return sim, data


def run_scenario(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what the engine did, what the scenario expects), both in comparable form."""
    sim, data = load(path)
    sim.play(data["timeline"])
    single = len(sim.journeys) == 1
    # One customer's lines keep their order; customers due at the same minute are sorted.
    actual = _ordered([_comparable(line, single=single) for line in sim.output])
    expected = _ordered(
        [_comparable(dict(line), single=single) for line in data.get("expect") or []]
    )
    return actual, expected


def _ordered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda line: (line["at"], line["customer"]))


def _comparable(line: dict[str, Any], *, single: bool) -> dict[str, Any]:
    result = dict(line)
    result["at"] = moment(result["at"]).strftime("%Y-%m-%d %H:%M")
    if single:
        result.pop("journey", None)
    return result


def render(lines: list[dict[str, Any]]) -> str:
    return "\n".join(
        "  " + ", ".join(f"{key}: {value}" for key, value in line.items()) for line in lines
    )
