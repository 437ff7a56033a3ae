"""Journeys as marketers write them: DESIGN.md's short forms, the tagged long form they
become (and come back from), and the errors a broken journey gets, named by step path."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
import yaml

from orbita.core.errors import InvalidInputError
from orbita.model.journeys import (
    BranchStep,
    Entry,
    ExitStep,
    GotoStep,
    Journey,
    SendStep,
    SplitStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WebhookStep,
    journey_graph,
    parse_journey,
)
from orbita.model.segments import TraitCondition
from orbita.model.triggers import (
    ApiTrigger,
    DateTrigger,
    EventTrigger,
    ScheduleTrigger,
    SegmentTrigger,
)

# DESIGN.md's sketch, with the step its on_timeout names.
SKETCH = """
trigger: {event: "Product Added"}
entry: {cooldown: 7d}
exit_on: [{event: "Order Completed"}]
goal: {event: "Order Completed", within: 7d}
holdout: 10%
steps:
  - wait: 1h
  - send: cart_reminder
  - wait_for: {event: "Email Clicked", timeout: 2d, on_timeout: sms_nudge}
  - exit
  - {id: sms_nudge, send: {template: sms_nudge, channel: sms}}
"""


def _journey(text: str) -> Journey:
    return parse_journey(yaml.safe_load(text), name="j")


def _error(text: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        _journey(text)
    return str(caught.value)


def test_design_sketch_parses_into_tagged_steps() -> None:
    journey = _journey(SKETCH)
    assert journey.trigger == EventTrigger(event="Product Added")
    assert journey.entry == Entry(mode="cooldown", cooldown=timedelta(days=7))
    assert journey.exit_on[0].event == "Order Completed"
    assert journey.goal is not None and journey.goal.within == timedelta(days=7)
    assert journey.holdout == pytest.approx(0.1)
    wait, send, wait_for, exit_step, nudge = journey.steps
    assert isinstance(wait, WaitStep) and wait.duration == timedelta(hours=1)
    assert isinstance(send, SendStep) and send.template == "cart_reminder"
    assert isinstance(wait_for, WaitForStep) and wait_for.on_timeout == "sms_nudge"
    assert wait_for.timeout == timedelta(days=2)
    assert isinstance(exit_step, ExitStep)
    assert isinstance(nudge, SendStep) and nudge.channel == "sms" and nudge.id == "sms_nudge"


def test_the_sketch_alone_names_its_missing_step() -> None:
    text = SKETCH.split("  - exit")[0]
    message = _error(text)
    assert "steps.2.on_timeout" in message
    assert "no step has the id 'sms_nudge'" in message


def test_long_form_round_trips() -> None:
    text = """
trigger: {segment_entered: champions}
entry: {key: cart_id}
steps:
  - wait: {until: "09:00", days: [mon, fri]}
  - wait: {until_trait: renewal_date, before: 3d, at: "10:00"}
  - id: clicked
    wait_for: {event: "Email Clicked", where: {campaign: {in: [a, b]}}, correlate: cart_id,
               timeout: 1d, on_event: [{update: {trait: clicks, increment: 1}}],
               on_timeout: [{goto: clicked}]}
  - branch:
      - {when: {trait: credit_score, lt: 600}, then: [{exit: low score}]}
      - {when: {segment: vip}, then: vip}
    else: [{webhook: "https://crm.example.com/x"}]
  - split:
      - {name: A, percent: 50%, then: [{send: a}]}
      - {name: B, percent: 50%}
  - {id: vip, send: vip_offer}
"""
    journey = _journey(text)
    long_form = journey.model_dump(mode="json")
    assert long_form["steps"][3]["type"] == "branch" and "else" in long_form["steps"][3]
    assert Journey.model_validate(long_form) == journey
    assert Journey.model_validate_json(journey.model_dump_json()) == journey


def test_every_step_short_form() -> None:
    journey = _journey(
        """
trigger: {api: true}
steps:
  - wait: 2d
  - send: {template: t, channel: telegram, variant: B}
  - update: {trait: vip, set: true}
  - webhook: {url: "https://x.example.com", method: PUT, body: {a: 1}}
  - branch: [{when: {trait: vip, eq: true}, then: [{exit: done}]}]
  - goto: steps.0
"""
    )
    wait, send, update, webhook, branch, goto = journey.steps
    assert isinstance(wait, WaitStep) and wait.duration == timedelta(days=2)
    assert isinstance(send, SendStep) and (send.channel, send.variant) == ("telegram", "B")
    assert isinstance(update, UpdateStep) and update.set is True
    assert isinstance(webhook, WebhookStep) and webhook.method == "PUT"
    assert isinstance(branch, BranchStep)
    assert isinstance(branch.arms[0].when, TraitCondition)
    assert isinstance(goto, GotoStep) and goto.target == "steps.0"
    assert isinstance(journey.trigger, ApiTrigger)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({"event": "Logged In", "where": {"new_device": True}}, EventTrigger),
        ({"segment_exited": "vip"}, SegmentTrigger),
        ({"schedule": "0 9 * * 1", "segment": "lapsed", "timezone": "customer"}, ScheduleTrigger),
        ({"date_trait": "card_activated_at", "after": "14d"}, DateTrigger),
        ("api", ApiTrigger),
    ],
)
def test_trigger_short_forms(trigger: object, expected: type) -> None:
    journey = Journey.model_validate({"trigger": trigger})
    assert isinstance(journey.trigger, expected)
    assert Journey.model_validate(journey.model_dump(mode="json")) == journey


def test_trigger_details() -> None:
    segment = Journey.model_validate({"trigger": {"segment_exited": "vip"}}).trigger
    assert isinstance(segment, SegmentTrigger) and segment.on == "exited"
    birthday = Journey.model_validate(
        {"trigger": {"date_trait": "birthday", "yearly": True, "at": "10:30"}}
    ).trigger
    assert isinstance(birthday, DateTrigger) and birthday.at == time(10, 30)


def test_graph_ids_are_paths_or_given_ids() -> None:
    journey = _journey(SKETCH)
    graph, problems = journey_graph(journey)
    assert problems == []
    assert graph.start == "steps.0"
    assert list(graph.nodes) == ["steps.0", "steps.1", "steps.2", "steps.3", "sms_nudge"]
    assert dict(graph.nodes["steps.2"].edges) == {"event": "steps.3", "timeout": "sms_nudge"}
    nested = _journey(
        """
trigger: {event: x}
steps:
  - branch: [{when: {trait: a, exists: true}, then: [{send: a}]}]
    else: [{send: b}]
  - split: [{name: A, percent: 50%, then: [{send: c}]}, {name: B, percent: 50%}]
"""
    )
    graph, _ = journey_graph(nested)
    assert set(graph.nodes) == {
        "steps.0",
        "steps.0.branch.0.then.0",
        "steps.0.else.0",
        "steps.1",
        "steps.1.split.0.then.0",
    }
    # A nested list goes on with the step after its parent.
    assert graph.nodes["steps.0.branch.0.then.0"].next == "steps.1"
    assert graph.nodes["steps.1"].edges == {"A": "steps.1.split.0.then.0", "B": None}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "steps: [{send: a}, {goto: nowhere}]",
            ["steps.1.goto", "no step has the id 'nowhere'"],
        ),
        (
            "steps: [{send: a}, exit, {send: b}]",
            ["steps.2", "send b is never reached"],
        ),
        (
            "steps: [{id: again, send: a}, {goto: again}]",
            ["loop without a wait", "steps.0 (again): send a -> steps.1: goto again"],
        ),
        ("steps: [{send: a, id: x}, {send: b, id: x}]", ["step id 'x' is used twice"]),
        ("steps: [{sned: a}]", ["steps[0]", "not a step (got sned)", "send"]),
        ("steps: [{wait: 30}]", ["steps[0]", "30 has no unit"]),
        ("steps: [{wait: {until: 9:30}}]", ["write the time in quotes"]),
        ("steps: [{wait: {days: [mon]}}]", ["a wait needs one of"]),
        (
            "steps: [{split: [{name: A, percent: 50%}, {name: B, percent: 40%}]}]",
            ["add up to 90%"],
        ),
        ("steps: [{wait_for: {event: x}}]", ["timeout is required"]),
        ("steps: [{update: {trait: x}}]", ["set: value or increment"]),
        ("entry: {cooldown: 7d, mode: once}", ["entry"]),
    ],
)
def test_mistakes_are_named_by_step_path(text: str, words: list[str]) -> None:
    message = _error("trigger: {event: x}\n" + text)
    for word in words:
        assert word in message, message


def test_bad_triggers_are_explained() -> None:
    assert "cron '0 9 * *' needs 5 fields" in _error('trigger: {schedule: "0 9 * *"}')
    assert "hour must be 0..23" in _error('trigger: {schedule: "0 25 * * *"}')
    assert "unknown time zone" in _error('trigger: {schedule: "0 9 * * *", timezone: Mars/X}')
    assert "a trigger starts with one of" in _error("trigger: {evnt: x}")


def test_correlated_properties_are_collected() -> None:
    journey = _journey(
        """
trigger: {event: "Product Added"}
entry: {key: basket}
exit_on: [{event: "Order Completed", correlate: cart_id}]
steps:
  - wait_for: {event: "Checkout Started", correlate: [cart_id, store], timeout: 1h}
"""
    )
    assert journey.correlated_properties() == ("cart_id", "store", "basket")


def test_split_and_send_models() -> None:
    journey = _journey(
        "trigger: {event: x}\nsteps: [{split: [{name: A, percent: 70%}, {name: B, percent: 30%}]}]"
    )
    split = journey.steps[0]
    assert isinstance(split, SplitStep) and [a.percent for a in split.arms] == [0.7, 0.3]
