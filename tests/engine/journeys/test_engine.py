"""The journey engine's rules that scenarios do not show one at a time: sticky and fair
splits and holdouts, idempotency keys, event races, the loop guard, trigger matching
against the generic interpreter, filters against the segment reference, cron and dates."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import yaml

from orbita.engine.journeys import (
    Convert,
    Exit,
    RunsSummary,
    RunState,
    Schedule,
    Send,
    Suppressed,
    advance,
    compile_journey,
    compile_triggers,
    enter,
    interpret_triggers,
    next_cron_time,
    next_date_trigger,
    next_time_of_day,
    on_event,
)
from orbita.engine.journeys.predicates import compile_test
from orbita.engine.journeys.run import CompiledJourney
from orbita.engine.journeys.times import zone
from orbita.engine.segments.reference import _json_value, value_test
from orbita.model.events import EventRecord
from orbita.model.journeys import Journey, parse_journey
from orbita.model.segments import Condition, PropertyTest
from orbita.model.triggers import DateTrigger

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


@dataclass
class Facts:
    traits: dict[str, Any]
    timezone: str = "UTC"

    def holds(self, condition: Condition, *, now: datetime) -> bool:
        return False

    def trait(self, name: str) -> object:
        return self.traits.get(name)


def _compiled(text: str, name: str = "j") -> CompiledJourney:
    return compile_journey(name, parse_journey(yaml.safe_load(text), name=name))


def _event(name: str, at: datetime = T0, message_id: str = "m1", **props: Any) -> EventRecord:
    return EventRecord(
        message_id=message_id,
        type="track",
        name=name,
        user_id="u",
        anonymous_id=None,
        properties=props,
        context={},
        timestamp=at,
        received_at=at,
    )


def _enter(journey: CompiledJourney, customer: int, **props: Any) -> RunState:
    decision = enter(
        journey,
        customer=customer,
        trigger_event=_event("Start", message_id=f"t{customer}", **props),
        now=T0,
        previous_runs_summary=RunsSummary(),
    )
    assert decision.state is not None
    return decision.state


SPLIT = """
trigger: {event: Start}
steps:
  - split:
      - {name: A, percent: 50%, then: [{send: a}]}
      - {name: B, percent: 30%, then: [{send: b}]}
      - {name: C, percent: 20%, then: [{send: c}]}
"""


def test_split_is_fair_and_sticky() -> None:
    journey = _compiled(SPLIT)
    arms: dict[int, str] = {}
    for customer in range(6000):
        decision = advance(journey, _enter(journey, customer), now=T0, facts=Facts({}))
        (send,) = [c for c in decision.commands if isinstance(c, Send)]
        arms[customer] = send.template
        assert send.variant == send.template.upper()
    shares = Counter(arms.values())
    assert shares["a"] / 6000 == pytest.approx(0.5, abs=0.025)
    assert shares["b"] / 6000 == pytest.approx(0.3, abs=0.025)
    assert shares["c"] / 6000 == pytest.approx(0.2, abs=0.025)
    # Sticky: another run, a new version — the same customer takes the same arm.
    again = compile_journey("j", journey.journey, version=2)
    for customer in range(200):
        state = _enter(again, customer)
        state = replace(state, run_id="another")
        decision = advance(again, state, now=T0 + timedelta(days=30), facts=Facts({}))
        (send,) = [c for c in decision.commands if isinstance(c, Send)]
        assert send.template == arms[customer]


def test_holdout_share_is_fixed_per_customer() -> None:
    journey = _compiled("trigger: {event: Start}\nholdout: 10%\nsteps: [{send: a}]")
    control = {c for c in range(5000) if _enter(journey, c).holdout}
    assert len(control) / 5000 == pytest.approx(0.1, abs=0.015)
    assert control == {c for c in range(5000) if _enter(journey, c).holdout}
    customer = min(control)
    decision = advance(journey, _enter(journey, customer), now=T0, facts=Facts({}))
    assert [type(c) for c in decision.commands if isinstance(c, Send | Suppressed)] == [Suppressed]


def test_idempotency_keys_are_deterministic_and_count_occurrences() -> None:
    journey = _compiled(
        "trigger: {event: Start}\nsteps: [{id: loop, send: a}, {wait: 1d}, {goto: loop}]"
    )
    state = _enter(journey, 7)
    keys = []
    now = T0
    for _ in range(3):
        decision = advance(journey, state, now=now, facts=Facts({}))
        keys += [c.idempotency_key for c in decision.commands if isinstance(c, Send)]
        assert decision.state is not None
        state = decision.state
        now += timedelta(days=1)
    assert len(set(keys)) == 3  # the same node visited again is another occurrence
    replay = advance(journey, _enter(journey, 7), now=T0, facts=Facts({}))
    assert [c.idempotency_key for c in replay.commands if isinstance(c, Send)] == keys[:1]


def test_a_run_not_due_or_ended_is_left_alone() -> None:
    journey = _compiled("trigger: {event: Start}\nsteps: [{wait: 1h}, {send: a}]")
    decision = advance(journey, _enter(journey, 1), now=T0, facts=Facts({}))
    waiting = decision.state
    assert waiting is not None and decision.commands[-1] == Schedule(T0 + timedelta(hours=1))
    assert advance(journey, waiting, now=T0 + timedelta(minutes=59), facts=Facts({})).commands == ()
    done = advance(journey, waiting, now=T0 + timedelta(hours=1), facts=Facts({})).state
    assert done is not None and done.status == "completed" and done.wake_at is None
    assert advance(journey, done, now=T0 + timedelta(days=9), facts=Facts({})).state == done


def test_a_timeout_already_due_beats_a_later_event() -> None:
    journey = _compiled(
        "trigger: {event: Start}\n"
        "steps: [{wait_for: {event: Clicked, timeout: 1h, on_timeout: [{send: nudge}]}}]"
    )
    waiting = advance(journey, _enter(journey, 1), now=T0, facts=Facts({})).state
    assert waiting is not None and waiting.status == "waiting"
    late = _event("Clicked", at=T0 + timedelta(hours=2), message_id="c")
    assert on_event(journey, waiting, late, now=late.timestamp).state == waiting
    in_time = _event("Clicked", at=T0 + timedelta(minutes=30), message_id="c")
    moved = on_event(journey, waiting, in_time, now=in_time.timestamp)
    assert moved.commands[-1] == Exit("completed")


def test_the_trigger_event_neither_converts_nor_exits_its_own_run() -> None:
    journey = _compiled(
        "trigger: {event: Order Completed}\n"
        "exit_on: [{event: Order Completed}]\n"
        "goal: {event: Order Completed, within: 30d}\n"
        "steps: [{wait: 10d}, {send: a}]"
    )
    trigger = _event("Order Completed", message_id="t1")
    state = enter(
        journey,
        customer=1,
        trigger_event=trigger,
        now=T0,
        previous_runs_summary=RunsSummary(),
    ).state
    assert state is not None
    assert on_event(journey, state, trigger, now=T0).commands == ()
    second = _event("Order Completed", at=T0 + timedelta(days=1), message_id="o2")
    assert on_event(journey, state, second, now=second.timestamp).commands == (
        Convert(at=second.timestamp, message_id="o2"),
        Exit("exit_on Order Completed"),
    )


def test_a_loop_through_a_past_date_stops() -> None:
    journey = _compiled(
        "trigger: {event: Start}\n"
        "steps: [{id: again, wait: {until_trait: renewal}}, {send: a}, {goto: again}]"
    )
    decision = advance(journey, _enter(journey, 1), now=T0, facts=Facts({"renewal": "2020-01-01"}))
    assert decision.state is not None and decision.state.status == "exited"
    assert "without a wait" in (decision.state.exit_reason or "")


def test_entry_rules() -> None:
    journey = _compiled("trigger: {event: Start}\nentry: {cooldown: 2d}\nsteps: [{send: a}]")
    event = _event("Start")
    summary = RunsSummary(entries=1, last_entered_at=T0 - timedelta(days=1))
    refused = enter(journey, customer=1, trigger_event=event, now=T0, previous_runs_summary=summary)
    assert refused.state is None
    later = enter(
        journey,
        customer=1,
        trigger_event=event,
        now=T0 + timedelta(days=1, seconds=1),
        previous_runs_summary=summary,
    )
    assert later.state is not None
    busy = RunsSummary(
        entries=1, last_entered_at=T0 - timedelta(days=9), active_keys=frozenset({None})
    )
    assert (
        enter(journey, customer=1, trigger_event=event, now=T0, previous_runs_summary=busy).state
        is None
    )


# --- triggers --------------------------------------------------------------------------------

NAMES = ["Product Viewed", "Product Added", "Order Completed", "Logged In", "Segment Entered"]


def _rules() -> dict[str, Journey]:
    rng = random.Random(4)
    journeys: dict[str, Journey] = {}
    filters: list[dict[str, Any]] = [
        {},
        {"category": "shoes"},
        {"category": {"in": ["shoes", "bags"]}},
        {"price": {"gte": 50}},
        {"price": {"between": [10, 60]}},
        {"new_device": True},
        {"title": {"contains": "sale"}},
        {"coupon": {"exists": True}},
        {"category": {"ne": "shoes"}},
        {"created": {"within": "7d"}},
        {"created": {"gt": "2025-01-01"}},
    ]
    for index in range(50):
        name = rng.choice(NAMES)
        trigger: dict[str, Any] = {"event": name}
        if name == "Segment Entered":
            trigger = {"segment_entered": rng.choice(["vip", "lapsed"])}
        elif where := rng.choice(filters):
            trigger["where"] = where
        journeys[f"j{index}"] = Journey.model_validate({"trigger": trigger})
    return journeys


def _events(count: int) -> list[EventRecord]:
    rng = random.Random(9)
    events = []
    for index in range(count):
        props = {
            "category": rng.choice(["shoes", "bags", "dresses", 5, None]),
            "price": rng.choice([5, 49.5, 50, 120, "80", True]),
            "new_device": rng.choice([True, False, "true"]),
            "title": rng.choice(["big sale", "new in", 3]),
            "segment": rng.choice(["vip", "lapsed", "x"]),
            "created": rng.choice(["2025-03-01T00:00:00+00:00", "2024-12-01", "soon", None]),
        }
        if rng.random() < 0.3:
            props["coupon"] = "X"
        events.append(_event(rng.choice([*NAMES, "Other"]), message_id=f"e{index}", **props))
    return events


def test_compiled_triggers_match_the_interpreter() -> None:
    journeys, events = _rules(), _events(3000)
    compiled = compile_triggers(journeys).match(events)
    interpreted = interpret_triggers(journeys, events)
    key = lambda pair: (pair[1].message_id, pair[0])  # noqa: E731
    assert sorted(compiled, key=key) == sorted(interpreted, key=key)
    assert len(compiled) > 1000


@pytest.mark.parametrize(
    "test",
    [
        {"property": "v", "op": "eq", "value": "shoes"},
        {"property": "v", "op": "eq", "value": 50},
        {"property": "v", "op": "eq", "value": True},
        {"property": "v", "op": "ne", "value": "shoes"},
        {"property": "v", "op": "ne", "value": 50},
        {"property": "v", "op": "in", "value": ["shoes", "bags"]},
        {"property": "v", "op": "in", "value": [1, 50]},
        {"property": "v", "op": "gt", "value": 49.5},
        {"property": "v", "op": "lte", "value": 50},
        {"property": "v", "op": "gte", "value": "2025-01-01"},
        {"property": "v", "op": "between", "value": [1, 50]},
        {"property": "v", "op": "exists", "value": True},
        {"property": "v", "op": "exists", "value": False},
        {"property": "v", "op": "contains", "value": "oe"},
        {"property": "v", "op": "before", "value": "30d"},
        {"property": "v", "op": "within", "value": "30d"},
        {"property": "v", "op": "within_next", "value": "30d"},
        {"property": "v", "op": "anniversary_within", "value": "3d"},
    ],
)
def test_filters_agree_with_the_segment_reference(test: dict[str, Any]) -> None:
    parsed = PropertyTest.model_validate(test)
    compiled = compile_test(parsed)
    values: list[Any] = [
        None, "shoes", "boots", 50, 50.0, 49.5, 1, True, False, "50", [1], {"a": 1},
        "2025-03-01", "2025-02-10T10:00:00+00:00", "2024-03-04", "2025-04-01", "soon",
    ]  # fmt: skip
    for value in values:
        props = {"v": value} if value is not None else {}
        expected = value_test(parsed.op, parsed.value, _json_value(props, "v"), as_of=T0)
        assert compiled(props, T0) == expected, (test, value)


# --- times -----------------------------------------------------------------------------------


def test_cron_times() -> None:
    monday_9 = next_cron_time("0 9 * * 1", after=T0, timezone="Europe/Kyiv")
    assert monday_9 == datetime(2025, 3, 10, 7, 0, tzinfo=UTC)  # T0 is Monday 12:00 in Kyiv
    assert next_cron_time("*/15 * * * *", after=T0, timezone="UTC") == T0 + timedelta(minutes=15)
    # Day of month OR day of week, as in cron: the 1st, or any Friday.
    first_or_friday = next_cron_time("0 0 1 * 5", after=T0, timezone="UTC")
    assert first_or_friday == datetime(2025, 3, 7, tzinfo=UTC)
    # The EU spring-forward night: 03:30 in Kyiv does not exist; taken as 04:30 EEST.
    night = next_cron_time(
        "30 3 * * *", after=datetime(2025, 3, 29, 12, tzinfo=UTC), timezone="Europe/Kyiv"
    )
    assert night == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert next_cron_time("0 12 29 2 *", after=T0, timezone="UTC") == datetime(
        2028, 2, 29, 12, tzinfo=UTC
    )


def test_time_of_day_is_strictly_after_now() -> None:
    kyiv = zone("Europe/Kyiv")
    at_nine = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)  # 09:00 in Kyiv
    assert next_time_of_day(now=at_nine, at=time(9), where=kyiv) == at_nine + timedelta(days=1)
    before = at_nine - timedelta(seconds=1)
    assert next_time_of_day(now=before, at=time(9), where=kyiv) == at_nine


def test_date_triggers() -> None:
    after_14d = DateTrigger.model_validate({"date_trait": "card_activated_at", "after": "14d"})
    fire = next_date_trigger(after_14d, value="2025-03-01", after=T0, timezone="Europe/Kyiv")
    assert fire == datetime(2025, 3, 15, 7, 0, tzinfo=UTC)  # 09:00 in Kyiv
    assert next_date_trigger(after_14d, value="2025-01-01", after=T0, timezone="UTC") is None
    assert next_date_trigger(after_14d, value=None, after=T0, timezone="UTC") is None
    birthday = DateTrigger.model_validate({"date_trait": "birthday", "yearly": True})
    leap = next_date_trigger(birthday, value=date(2000, 2, 29), after=T0, timezone="UTC")
    assert leap == datetime(2026, 2, 28, 9, tzinfo=UTC)


def test_run_state_round_trips_through_json() -> None:
    journey = _compiled(SPLIT)
    state = advance(journey, _enter(journey, 3, cart_id="c1"), now=T0, facts=Facts({})).state
    assert state is not None
    assert RunState.from_json(state.to_json()) == state
