"""The clock is injected: the wall clock in production, a simulated one in demos and tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, always time zone-aware (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that only moves when told to: `orbita run --until`, demos and tests."""

    def __init__(self, start: datetime) -> None:
        _require_aware(start)
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> datetime:
        if by < timedelta(0):
            raise ValueError("a clock does not move backwards")
        self._now += by
        return self._now

    def set(self, to: datetime) -> datetime:
        _require_aware(to)
        to = to.astimezone(UTC)
        if to < self._now:
            raise ValueError("a clock does not move backwards")
        self._now = to
        return self._now


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: Orbita only uses time zone-aware datetimes")
