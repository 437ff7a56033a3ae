"""The retail calendar: when customers arrive and when they are active.

Activity follows a daily multiplier (weekday, Black Friday week, December, January sales,
summer lull) normalised to a mean of 1 over a year. Processes with constant rates (the
BTYD purchase process) run in "operational days" — calendar days stretched by the
multiplier — so a customer's expected number of purchases per year is what the parameters
say while November still has more orders than February.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from orbita.simulation.records import DAY_MS, MINUTE_MS, Floats, Int64s

# Monday .. Sunday.
WEEKDAY = (0.97, 0.95, 0.96, 0.98, 1.0, 1.02, 1.12)

# Share of a day's sessions per local hour: quiet nights, a lunch bump, an evening peak.
DIURNAL = np.array(
    [
        0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.2, 2.0, 2.6, 3.0, 3.2,
        3.6, 3.5, 3.2, 3.1, 3.3, 3.8, 4.6, 5.4, 5.8, 5.2, 3.6, 1.8,
    ]
)  # fmt: skip
DIURNAL = DIURNAL / DIURNAL.sum()

# Bank transactions happen in the day, logins mostly in the morning and evening.
DAYTIME = np.array(
    [
        0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.8, 2.5, 3.6, 4.0, 4.3, 4.8,
        5.8, 5.6, 4.8, 4.6, 5.0, 5.8, 6.2, 5.6, 4.5, 3.4, 2.0, 0.8,
    ]
)  # fmt: skip
DAYTIME = DAYTIME / DAYTIME.sum()


def black_friday(year: int) -> date:
    """The fourth Friday of November."""
    first = date(year, 11, 1)
    first_friday = first + timedelta(days=(4 - first.weekday()) % 7)
    return first_friday + timedelta(weeks=3)


def retail_multiplier(day: date) -> float:
    """How busy a calendar day is for online retail, before normalisation."""
    season = 1.0
    bf = black_friday(day.year)
    if day == bf:
        season = 3.0
    elif day == bf + timedelta(days=3):  # Cyber Monday
        season = 2.4
    elif bf - timedelta(days=7) <= day < bf or bf < day <= bf + timedelta(days=2):
        season = 1.7
    elif day.month == 11:
        season = 1.25
    elif day.month == 12:
        season = {24: 1.0, 25: 0.6, 26: 0.9}.get(day.day, 1.5 if day.day < 21 else 1.3)
    elif day.month == 1:
        season = 1.2 if day.day <= 15 else 0.9
    elif day.month == 2:
        season = 0.85
    elif day.month in (7, 8):
        season = 0.88
    return season * WEEKDAY[day.weekday()]


def _year_mean() -> float:
    # The mean over a whole year (any year) normalises rates to "per average day".
    days = [date(2025, 1, 1) + timedelta(days=i) for i in range(365)]
    return sum(retail_multiplier(d) for d in days) / len(days)


_YEAR_MEAN = _year_mean()


@dataclass(frozen=True, slots=True)
class Calendar:
    """The generated period [start, end) with its daily activity multipliers."""

    start_ms: int
    days: int
    multiplier: Floats  # one value per calendar day, mean 1 over a year
    operational: Floats  # cumulative operational days at each day boundary (days + 1 values)

    @classmethod
    def build(cls, *, start: datetime, days: int) -> Calendar:
        if start.tzinfo is None:
            raise ValueError("start must be time zone-aware")
        start_utc = start.astimezone(UTC)
        first = start_utc.date()
        values = [retail_multiplier(first + timedelta(days=i)) / _YEAR_MEAN for i in range(days)]
        multiplier = np.array(values, dtype=np.float64)
        operational = np.concatenate([[0.0], np.cumsum(multiplier)])
        return cls(
            start_ms=int(start_utc.timestamp() * 1000),
            days=days,
            multiplier=multiplier,
            operational=operational,
        )

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    @property
    def operational_days(self) -> float:
        return float(self.operational[-1])

    def to_operational(self, ms: Int64s | Floats) -> Floats:
        """Calendar milliseconds -> operational days since start (piecewise linear)."""
        day = (np.asarray(ms, dtype=np.float64) - self.start_ms) / DAY_MS
        grid = np.arange(self.days + 1, dtype=np.float64)
        inside = np.interp(day, grid, self.operational)
        # Outside the period one operational day is one calendar day.
        before = np.minimum(day, 0.0)
        after = np.maximum(day - self.days, 0.0)
        return inside + before + after

    def to_calendar(self, operational: Floats) -> Int64s:
        """Operational days since start -> calendar milliseconds; past the end stays past it."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        day = np.interp(operational, self.operational, grid)
        before = np.minimum(operational, 0.0)
        after = np.maximum(operational - self.operational[-1], 0.0)
        return np.asarray(self.start_ms + (day + before + after) * DAY_MS, dtype=np.int64)

    def acquisition_weights(self, *, yearly_growth: float) -> Floats:
        """Relative sign-ups per day: a growing business, busier on busy days."""
        growth = np.exp(np.log1p(yearly_growth) * np.arange(self.days) / 365.0)
        weights = growth * self.multiplier
        return np.asarray(weights / weights.sum(), dtype=np.float64)


def at_local_hour(
    rng: np.random.Generator,
    ms: Int64s,
    *,
    utc_offset_hours: Int64s,
    profile: Floats = DIURNAL,
) -> Int64s:
    """Keep each moment's local day but draw its time of day from `profile`.

    Offsets are standard time (no DST): the hour profile is a tendency, not a timetable.
    """
    offset = utc_offset_hours * 3_600_000
    local = ms + offset
    day = np.floor_divide(local, DAY_MS) * DAY_MS
    hours = rng.choice(24, size=len(ms), p=profile)
    minutes = rng.integers(0, 60 * MINUTE_MS, size=len(ms))
    return np.asarray(day + hours * 3_600_000 + minutes - offset, dtype=np.int64)


def segment_starts(groups: Int64s) -> Int64s:
    """Index of the first row of each run of equal values (groups must be sorted)."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(np.diff(groups)) + 1
    return np.concatenate([[0], change]).astype(np.int64)


def rank_within(groups: Int64s) -> Int64s:
    """0, 1, 2… within each run of equal values (groups must be sorted)."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = segment_starts(groups)
    lengths = np.diff(np.concatenate([starts, [n]]))
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def numbered(customer: Int64s, ms: Int64s) -> Int64s:
    """0, 1, 2… per customer in time order (ties in input order)."""
    order = np.lexsort((ms, customer))
    number = np.empty(len(ms), dtype=np.int64)
    number[order] = rank_within(customer[order])
    return number


def repeat_ranges(counts: Int64s) -> tuple[Int64s, Int64s]:
    """For counts (2, 0, 3): owners (0, 0, 2, 2, 2) and positions (0, 1, 0, 1, 2)."""
    counts = counts.astype(np.int64)
    owners = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return owners, rank_within(owners)


def choose_rows(rng: np.random.Generator, cumulative: Floats) -> Int64s:
    """One category per row from per-row cumulative probabilities (rows x categories)."""
    u = rng.random(len(cumulative))[:, None]
    picked = (u > cumulative[:, :-1]).sum(axis=1)
    return np.asarray(picked, dtype=np.int64)


def pick(rng: np.random.Generator, weights: Sequence[float], size: int) -> Int64s:
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int64)
