"""A journey that names a segment the strategy lacks (its trigger, a branch) is a strategy
error pointing at the line, like any other unknown segment."""

from __future__ import annotations

import pytest

from orbita.core.errors import InvalidInputError
from orbita.model.strategy import parse_strategy

STRATEGY = """\
workspace: shop
segments:
  vip: {event: "Order Completed", count: ">= 3"}
journeys:
  welcome_vip:
    trigger: {segment_entered: %(trigger)s}
    steps:
      - wait: 1d
      - branch:
          - {when: {segment: %(branch)s}, then: [{wait: 1h}]}
        else: [{wait: 2h}]
"""


def problems(trigger: str, branch: str) -> list[tuple[str, int | None]]:
    text = STRATEGY % {"trigger": trigger, "branch": branch}
    with pytest.raises(InvalidInputError) as caught:
        parse_strategy(text, source="strategy.yaml")
    return [(p.message.split(" (")[0], p.line) for p in caught.value.problems]


def test_known_segments_pass() -> None:
    text = STRATEGY % {"trigger": "vip", "branch": "vip"}
    assert set(parse_strategy(text, source="strategy.yaml").journeys) == {"welcome_vip"}


def test_unknown_trigger_and_branch_segments_are_named_with_their_lines() -> None:
    assert problems("vips", "big_spenders") == [
        ("unknown segment 'vips'", 6),
        ("unknown segment 'big_spenders'", 10),
    ]
