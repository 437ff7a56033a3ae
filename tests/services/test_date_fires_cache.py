"""`DateFires` (the runner's memory of date triggers' next fires) answers what
`next_date_trigger` answers, window after window, for yearly and one-off triggers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

from orbita.engine.journeys.times import next_date_trigger
from orbita.model.triggers import DateTrigger
from orbita.services.scheduler import DateFires

TRIGGERS = [
    DateTrigger(trait="birthday", yearly=True, at=time(10, 0)),
    DateTrigger(trait="activated_at", after=timedelta(days=14), at=time(9, 30)),
    DateTrigger(trait="renewal", yearly=True, after=timedelta(days=-3)),
]
ZONES = ["UTC", "Europe/Kyiv", "America/New_York", "Pacific/Kiritimati"]


def _values(rng: random.Random) -> list[object]:
    start = datetime(2023, 1, 1, tzinfo=UTC)
    values: list[object] = ["2000-02-29", "1990-12-31", "not a date", 5, None]
    for _ in range(40):
        moment = start + timedelta(minutes=rng.randrange(4 * 365 * 24 * 60))
        values.append(moment.date().isoformat() if rng.random() < 0.5 else moment.isoformat())
    return values


def test_date_fires_match_next_date_trigger_over_consecutive_windows() -> None:
    rng = random.Random(11)
    values = _values(rng)
    fires = DateFires()
    after = datetime(2025, 12, 20, tzinfo=UTC)
    found = 0
    for _ in range(120):  # four months of uneven windows
        until = after + timedelta(hours=rng.choice([6, 24, 30]))
        for trigger in TRIGGERS:
            for value in values:
                zone = rng.choice(ZONES)
                for moment in (after, after + timedelta(hours=1), until):
                    want = next_date_trigger(trigger, value=value, after=moment, timezone=zone)
                    got = fires.next(trigger, value=value, after=moment, timezone=zone)
                    assert got == want, (trigger, value, zone, moment)
                    found += want is not None and want <= until
        after = until
    assert found > 20  # the windows did see fires


def test_date_fires_take_unhashable_values() -> None:
    trigger = TRIGGERS[0]
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert DateFires().next(trigger, value=["2000-01-02"], after=moment, timezone="UTC") is None
