"""The `broadcasts:` part of the strategy: short forms, references, mistakes with lines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orbita.core.errors import InvalidInputError
from orbita.model.broadcasts import AtSchedule, Broadcast, CronSchedule
from orbita.model.strategy import parse_strategy

BASE = """workspace: shop
segments:
  subscribers: {trait: subscribed, eq: true}
  recent_buyers: {event: "Order Completed", within: 7d, count: ">= 1"}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "shop@example.com"}
templates:
  sale: {channel: email, subject: "Sale", text: "Hi", variants: {B: {subject: "SALE!"}}}
  letter: {channel: email, subject: "News", text: "Hi"}
broadcasts:
  winter:
    audience: {segment: subscribers, exclude: [recent_buyers]}
    template: sale
    variants: {A: {weight: 50}, B: {variant: B, weight: 50%}, C: letter}
    schedule: {at: "2026-12-01 09:00", local_time: true}
    throttle: 100/s
    holdout: 5%
    goal: Order Completed
    ab_test: {sample: 20%, wait: 4h, metric: click, default: A}
"""


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(InvalidInputError) as caught:
        parse_strategy(text, source="strategy.yaml")
    return [(p.field, p.line, p.message) for p in caught.value.problems]


def test_short_forms_read_into_the_long_form() -> None:
    broadcast = parse_strategy(BASE, source="strategy.yaml").broadcasts["winter"]
    assert broadcast.audience.segment == "subscribers"
    assert broadcast.audience.exclude == ("recent_buyers",)
    assert isinstance(broadcast.schedule, AtSchedule) and broadcast.schedule.local_time
    assert broadcast.schedule.at.isoformat() == "2026-12-01T09:00:00"  # a wall-clock time
    assert broadcast.throttle == 6000  # 100 a second, per minute
    assert broadcast.holdout == pytest.approx(0.05)
    assert broadcast.goal is not None and broadcast.goal.within == timedelta(days=3)
    arms = broadcast.arms()
    assert {name: (v.template, v.variant, v.weight) for name, v in arms.items()} == {
        "A": ("sale", None, 50.0),
        "B": ("sale", "B", 50.0),
        "C": ("letter", None, 1.0),
    }
    assert broadcast.default_arm() == "A"
    # What the database keeps reads back the same.
    again = Broadcast.model_validate(broadcast.model_dump(mode="json"))
    assert again == broadcast


def test_other_short_forms() -> None:
    text = BASE.replace(
        "audience: {segment: subscribers, exclude: [recent_buyers]}",
        "audience: {trait: subscribed, eq: true}",
    ).replace(
        'schedule: {at: "2026-12-01 09:00", local_time: true}', 'schedule: {cron: "0 9 * * 1"}'
    )
    broadcast = parse_strategy(text, source="s.yaml").broadcasts["winter"]
    assert broadcast.audience.condition is not None and broadcast.audience.segment is None
    assert isinstance(broadcast.schedule, CronSchedule)
    plain = Broadcast.model_validate({"audience": "subscribers", "template": "letter"})
    assert plain.arms() == {"letter": plain.arms()["letter"]} and plain.schedule is None


@pytest.mark.parametrize(
    ("change", "field", "line", "message"),
    [
        (("throttle: 100/s", "throttl: 5"), "broadcasts.winter.throttl", 16, "unknown key"),
        (
            ("variant: B,", "variant: Z,"),
            "broadcasts.winter.variants.B.variant",
            14,
            "has no variant 'Z'",
        ),
        (
            ("exclude: [recent_buyers]", "exclude: [nobody]"),
            "broadcasts.winter.audience.exclude[0]",
            12,
            "unknown segment 'nobody'",
        ),
        (("C: letter", "C: nope"), "broadcasts.winter.variants.C", 14, "unknown template"),
        (("default: A", "default: Z"), "broadcasts.winter.ab_test", 19, "not a variant"),
        (("sample: 20%", "sample: 120%"), "broadcasts.winter.ab_test.sample", 19, "between"),
        (("wait: 4h", "wait: 4"), "broadcasts.winter.ab_test.wait", 19, "no unit"),
        (("local_time: true", 'cron: "0 9 * * *"'), "broadcasts.winter.schedule", 15, "not both"),
        (("throttle: 100/s", "throttle: fast"), "broadcasts.winter.throttle", 16, "not a rate"),
        (("metric: click", "metric: conversion"), "broadcasts.winter", None, ""),
    ],
)
def test_mistakes_are_named_with_their_line(
    change: tuple[str, str], field: str, line: int | None, message: str
) -> None:
    text = BASE.replace(*change)
    if field == "broadcasts.winter":  # conversion with a goal is fine
        parse_strategy(text, source="s.yaml")
        return
    found = problems(text)
    assert any(f == field and at == line and message in m for f, at, m in found), found


def test_a_test_needs_variants_and_a_goal_for_conversions() -> None:
    found = problems(BASE.replace("    goal: Order Completed\n", "").replace("click", "revenue"))
    assert any("needs a goal event" in m for _, _, m in found), found
    with pytest.raises(ValueError, match="at least two variants"):
        Broadcast.model_validate(
            {"audience": "x", "template": "t", "ab_test": {"sample": "10%", "wait": "1h"}}
        )
