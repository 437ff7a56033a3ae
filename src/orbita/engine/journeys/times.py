"""Moments in a customer's time zone: the next 09:00, a date in a trait, a cron schedule.

Wall times a DST change skips (02:30 on a spring-forward night) are taken as the instant
they would name without the change, i.e. an hour later on the wall clock (03:30); wall times
that happen twice (the autumn night) are taken at their first occurrence. Results are UTC.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from orbita.engine.journeys.predicates import parse_time
from orbita.model.journeys import WEEKDAYS, WaitStep
from orbita.model.triggers import CRON_RANGES, DateTrigger


@lru_cache(maxsize=512)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def local_instant(day: date, at: time, where: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of a wall time on a day in a zone (fold 0: see the module doc)."""
    return datetime.combine(day, at, tzinfo=where).astimezone(UTC)


def next_time_of_day(
    *, now: datetime, at: time, where: zoneinfo.ZoneInfo, weekdays: Collection[int] = ()
) -> datetime:
    """The first instant strictly after `now` when the wall clock in `where` shows `at`
    (on one of `weekdays`, Monday = 0, when given)."""
    today = now.astimezone(where).date()
    for offset in range(15):
        day = today + timedelta(days=offset)
        if weekdays and day.weekday() not in weekdays:
            continue
        candidate = local_instant(day, at, where)
        if candidate > now:
            return candidate
    raise AssertionError("a time of day comes round within two weeks")  # pragma: no cover


def wait_until(step: WaitStep, *, now: datetime, timezone: str, trait: object) -> datetime:
    """When a wait step ends (a moment at or before `now` means: do not wait)."""
    if step.duration is not None:
        return now + step.duration
    where = zone(timezone)
    if step.until is not None:
        days = [WEEKDAYS.index(day) for day in step.days]
        return next_time_of_day(now=now, at=step.until, where=where, weekdays=days)
    moment = _trait_moment(trait, at=step.at, where=where)
    if moment is None:
        return now  # no date to wait for: go on
    if step.before is not None:
        moment -= step.before
    if step.after is not None:
        moment += step.after
    return moment


def _trait_moment(value: object, *, at: time | None, where: zoneinfo.ZoneInfo) -> datetime | None:
    """A date trait as an instant: at `at` local time on its date, or, without `at`, the
    datetime itself (a plain date: local midnight)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return local_instant(value, at or time(), where)
    moment = parse_time(value)
    if moment is None:
        return None
    if isinstance(value, str) and len(value) == 10:
        # A plain date names a day in the customer's calendar, not a UTC midnight.
        return local_instant(date.fromisoformat(value), at or time(), where)
    if at is None:
        return moment.astimezone(UTC)
    day = moment.astimezone(where).date()
    return local_instant(day, at or time(), where)


def next_date_trigger(
    trigger: DateTrigger, *, value: object, after: datetime, timezone: str
) -> datetime | None:
    """When a date trigger next fires for a customer whose trait holds `value`: strictly
    after `after`; None when it never will (no date, or a one-off date already past)."""
    where = zone(timezone)
    moment = parse_time(value) if not isinstance(value, date) else None
    if isinstance(value, date):
        day = value if not isinstance(value, datetime) else value.astimezone(where).date()
    elif moment is not None:
        day = moment.astimezone(where).date()
    else:
        return None
    if not trigger.yearly:
        fire = local_instant(day, trigger.at, where) + trigger.after
        return fire if fire > after else None
    start = (after - trigger.after).astimezone(where).year
    for year in range(start, start + 3):
        fire = local_instant(_anniversary(day, year), trigger.at, where) + trigger.after
        if fire > after:
            return fire
    return None  # pragma: no cover - an anniversary comes every year


def _anniversary(day: date, year: int) -> date:
    """The date's anniversary in `year`; 29 February is celebrated on the 28th."""
    try:
        return day.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


# --- cron ----------------------------------------------------------------------------------


def _cron_values(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-")
            start, end = int(first), int(last)
        else:
            start = int(base)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def next_cron_time(expression: str, *, after: datetime, timezone: str) -> datetime:
    """The first instant strictly after `after` that the cron expression names in the zone.

    As in cron, when both day of month and day of week are restricted either may match.
    """
    fields = expression.split()
    minutes, hours, days, months, weekdays = (
        _cron_values(text, low, high) for text, (low, high) in zip(fields, CRON_RANGES, strict=True)
    )
    # cron counts Sunday as 0 or 7, Python as 6.
    python_weekdays = frozenset((day - 1) % 7 for day in weekdays)
    day_restricted, weekday_restricted = fields[2] != "*", fields[4] != "*"
    where = zone(timezone)
    today = after.astimezone(where).date()
    for offset in range(366 * 5):
        day = today + timedelta(days=offset)
        if day.month not in months:
            continue
        by_day, by_weekday = day.day in days, day.weekday() in python_weekdays
        if day_restricted and weekday_restricted:
            if not (by_day or by_weekday):
                continue
        elif not (by_day and by_weekday):
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                candidate = local_instant(day, time(hour, minute), where)
                if candidate > after:
                    return candidate
    raise ValueError(f"cron {expression!r} names no time in the next five years")
