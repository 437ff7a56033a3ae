"""RFM cells: which named cell each of the 125 (recency, frequency, monetary) scores is in.

Scores are quintiles, 1 (worst: long ago, rarely, little) to 5 (best). A mapping names, per
cell, the scores it holds as patterns: `{r: 5, f: 4-5}` (a missing letter means any score).
Every one of the 125 combinations must fall in exactly one cell: the widely copied table of
the R package `rfm` overlaps and leaves 36 combinations out, which silently drops customers.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic_core import CoreSchema

from orbita.model.durations import Duration, parse_duration
from orbita.model.schema import JsonSchema, with_forms

SCORES = (1, 2, 3, 4, 5)
Scores = tuple[int, int, int]
ALL_SCORES: tuple[Scores, ...] = tuple(itertools.product(SCORES, SCORES, SCORES))
_RANGE = re.compile(r"^\s*([1-5])\s*(?:-\s*([1-5]))?\s*$")
# What _scores reads: a score, a range such as "4-5", "*", a list of those, or nothing.
_SCORE: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 5},
        {"type": "string", "pattern": r"^(\*|\s*[1-5]\s*(-\s*[1-5])?\s*)$"},
    ]
}
_SCORES_SCHEMA: dict[str, Any] = {
    "anyOf": [_SCORE, {"type": "array", "items": _SCORE}, {"type": "null"}],
    "description": "Scores 1 (worst) to 5 (best): 5, a range such as 4-5, or a list",
}


def _scores(value: object, letter: str) -> tuple[int, ...]:
    """`5` -> (5,), `"4-5"` -> (4, 5), `[1, 3]` -> (1, 3), missing -> 1..5."""
    if value is None or value == "*":
        return SCORES
    if isinstance(value, bool):
        raise ValueError(f"{letter}: {value!r} is not a score; write 1 to 5 or a range like 4-5")
    if isinstance(value, int):
        if value not in SCORES:
            raise ValueError(f"{letter}: scores go from 1 to 5, got {value}")
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(sorted({s for item in value for s in _scores(item, letter)}))
    match = _RANGE.match(str(value))
    if match is None:
        raise ValueError(f"{letter}: {value!r} is not a score; write 1 to 5 or a range like 4-5")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if low > high:
        raise ValueError(f"{letter}: write the range low first, such as 2-4, not {value}")
    return tuple(range(low, high + 1))


class ScorePattern(BaseModel):
    """The scores one entry of a cell holds: `{r: 5, f: 4-5}`; a missing letter is any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: Any = None
    f: Any = None
    m: Any = None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            for letter in ("r", "f", "m"):
                schema["properties"][letter] |= _SCORES_SCHEMA

        return with_forms(core_schema, handler, describe)

    @model_validator(mode="after")
    def _valid(self) -> ScorePattern:
        for letter in ("r", "f", "m"):
            _scores(getattr(self, letter), letter)
        return self

    def expand(self) -> list[Scores]:
        return list(
            itertools.product(_scores(self.r, "r"), _scores(self.f, "f"), _scores(self.m, "m"))
        )


# The customary eleven cells, disjoint and complete; recency and frequency decide, and
# monetary separates the big spenders among the lapsed frequent buyers (can't lose them).
DEFAULT_CELLS: dict[str, list[dict[str, Any]]] = {
    "champions": [{"r": 5, "f": "4-5"}, {"r": 4, "f": 5}],
    "loyal": [{"r": 4, "f": 4}, {"r": 3, "f": "4-5"}],
    "potential_loyalist": [{"r": "4-5", "f": "2-3"}],
    "new_customers": [{"r": 5, "f": 1}],
    "promising": [{"r": 4, "f": 1}],
    "need_attention": [{"r": 3, "f": 3}],
    "about_to_sleep": [{"r": 3, "f": "1-2"}],
    "at_risk": [{"r": 2, "f": "3-5", "m": "1-4"}, {"r": 1, "f": 3}],
    "cant_lose_them": [{"r": 1, "f": "4-5"}, {"r": 2, "f": "3-5", "m": 5}],
    "hibernating": [{"r": 2, "f": "1-2"}],
    "lost": [{"r": 1, "f": "1-2"}],
}


def _code(scores: Scores) -> str:
    return "".join(map(str, scores))


def _listed(items: list[str], most: int, separator: str) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return separator.join(items[:most]) + more


def cell_table(cells: Mapping[str, list[ScorePattern]]) -> dict[Scores, str]:
    """Every (r, f, m) to its cell; ValueError naming the gaps and overlaps if the cells do
    not cover each combination exactly once."""
    table: dict[Scores, str] = {}
    overlaps: list[str] = []
    for name, patterns in cells.items():
        for pattern in patterns:
            for scores in pattern.expand():
                other = table.get(scores)
                if other is not None and other != name:
                    overlaps.append(f"{_code(scores)} in {other} and {name}")
                table[scores] = name
    missing = [_code(scores) for scores in ALL_SCORES if scores not in table]
    problems = []
    if missing:
        problems.append(f"scores in no cell (RFM): {_listed(missing, 12, ', ')}")
    if overlaps:
        problems.append(f"scores in two cells: {_listed(overlaps, 6, '; ')}")
    if problems:
        raise ValueError("every RFM score must be in exactly one cell: " + "; ".join(problems))
    return table


class RfmConfig(BaseModel):
    """`rfm:` in the strategy: the window of orders scored, and optionally other cells."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Duration = Field(default_factory=lambda: parse_duration("365d"))
    event: str = Field(default="Order Completed", min_length=1)
    revenue_property: str = Field(default="revenue", min_length=1)
    cells: dict[str, list[ScorePattern]] = Field(
        default_factory=lambda: {
            name: [ScorePattern.model_validate(p) for p in patterns]
            for name, patterns in DEFAULT_CELLS.items()
        }
    )

    @model_validator(mode="after")
    def _complete(self) -> RfmConfig:
        cell_table(self.cells)
        return self

    def table(self) -> dict[Scores, str]:
        return cell_table(self.cells)
