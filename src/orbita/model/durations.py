"""Durations (`30m`, `1h`, `2d`, `1w`) and percentages (`10%`) as the strategy file writes them.

Both are plain Python values inside the models (`timedelta`, `float` in 0..1) and print back
in the short form, so a file read and written again looks the same to its author.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
DURATION_HINT = "write a whole number and a unit, such as 30m, 12h, 30d or 2w"


def parse_duration(value: object) -> timedelta:
    """`"30d"` -> 30 days. A bare number is refused: `30` could be minutes or days."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):  # bool is an int too
        raise ValueError(f"{value!r} has no unit: {DURATION_HINT}")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}: {DURATION_HINT}")
    match = _DURATION.match(value)
    if match is None:
        if value.strip().isdigit():
            raise ValueError(f"{value!r} has no unit: {DURATION_HINT}")
        raise ValueError(f"{value!r} is not a duration: {DURATION_HINT}")
    amount, unit = match.groups()
    return int(amount) * UNITS[unit]


def format_duration(value: timedelta) -> str:
    """The largest unit that divides the duration evenly: 14 days -> `2w`, 36 hours -> `36h`."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = int(UNITS[unit].total_seconds())
        if seconds % size == 0 and seconds:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_percentage(value: object) -> float:
    """`"10%"` -> 0.1; a fraction in 0..1 is accepted as is."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a percentage: write it like 10%")
    if isinstance(value, int | float):
        fraction = float(value)
    elif isinstance(value, str) and (match := _PERCENT.match(value)) is not None:
        fraction = float(match.group(1)) / 100
    else:
        raise ValueError(f"{value!r} is not a percentage: write it like 10%")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{value!r} is not between 0% and 100%")
    return fraction


def _format_percentage(value: float) -> str:
    return f"{value * 100:g}%"


def _duration_input(value: Any) -> timedelta:
    return parse_duration(value)


# What parse_duration and parse_percentage accept, for the strategy's JSON Schema.
DURATION_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\s*\d+\s*[smhdw]\s*$",
    "description": "A duration: a whole number and a unit (s, m, h, d, w)",
    "examples": ["30m", "12h", "30d", "2w"],
}
PERCENTAGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(0*100(\.0+)?|0*\d{1,2}(\.\d+)?)\s*%\s*$"},
        {"type": "number", "minimum": 0, "maximum": 1},
    ],
    "description": "A percentage such as 10% (or a fraction from 0 to 1)",
    "examples": ["10%"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_SCHEMA),
]
"""A duration field: reads `30d`, writes `30d` (JSON Schema: a string with a unit)."""

Percentage = Annotated[
    float,
    BeforeValidator(parse_percentage),
    PlainSerializer(_format_percentage, return_type=str),
    WithJsonSchema(PERCENTAGE_SCHEMA),
]
"""A percentage field: reads `10%`, holds 0.1, writes `10%`."""
