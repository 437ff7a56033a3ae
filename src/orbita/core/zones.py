"""Time zones by IANA name: the customer's, the workspace's, a schedule's."""

from __future__ import annotations

import zoneinfo


def is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def check_time_zone(name: str) -> str:
    """`name` if it is a time zone, else ValueError with a message a marketer can act on."""
    if not is_time_zone(name):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Kyiv or UTC")
    return name
