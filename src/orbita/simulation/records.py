"""What the simulation yields: columnar records of customers and events, in numpy arrays.

The generators stay pure and fast by describing values, not formatting them: a property is
a typed column (integers, money in cents, codes into a vocabulary, ids made of a prefix and
a number) and the writer turns the columns into JSON, CSV or Parquet in bulk. Every column
may be missing on some rows (`valid`), which is how one table holds events of many kinds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

Int64s = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


class Kind(StrEnum):
    INT = "int"  # int64
    FLOAT = "float"  # float64, written with up to 4 decimals
    MONEY = "money"  # int64 cents, written as a decimal number with 2 places
    BOOL = "bool"
    TEXT = "text"  # int64 codes into `vocabulary`
    ID = "id"  # prefix + the int64 value, zero-padded to `width` digits
    TIME = "time"  # int64 milliseconds since the epoch (UTC), written as ISO 8601
    DATE = "date"  # int64 milliseconds since the epoch (UTC), written as YYYY-MM-DD
    STR = "str"  # an object array of Python strings (customer-level values only)


@dataclass(frozen=True, slots=True, eq=False)
class Column:
    """One typed column; rows where `valid` is False have no value (absent / null)."""

    kind: Kind
    values: npt.NDArray[Any]
    valid: Bools | None = None
    vocabulary: tuple[str, ...] = ()
    prefix: str = ""
    width: int = 0

    def __len__(self) -> int:
        return len(self.values)

    def present(self) -> Bools:
        if self.valid is None:
            return np.ones(len(self.values), dtype=np.bool_)
        return self.valid

    def take(self, rows: Int64s) -> Column:
        valid = None if self.valid is None else self.valid[rows]
        return replace(self, values=self.values[rows], valid=valid)

    def python(self, row: int) -> Any:
        """One value as plain Python (tests and small callers; the writer works in bulk)."""
        if self.valid is not None and not self.valid[row]:
            return None
        value = self.values[row]
        match self.kind:
            case Kind.TEXT:
                return self.vocabulary[int(value)]
            case Kind.ID:
                return f"{self.prefix}{int(value):0{self.width}d}"
            case Kind.MONEY:
                return round(int(value) / 100, 2)
            case Kind.INT | Kind.TIME | Kind.DATE:
                return int(value)
            case Kind.FLOAT:
                return float(value)
            case Kind.BOOL:
                return bool(value)
            case Kind.STR:
                return value


@dataclass(frozen=True, slots=True, eq=False)
class ObjectList:
    """A list of objects per row (an order's products): rows of `items`, `count` from `start`."""

    items: Mapping[str, Column]
    start: Int64s
    count: Int64s
    valid: Bools | None = None

    def __len__(self) -> int:
        return len(self.start)

    def take(self, rows: Int64s) -> ObjectList:
        valid = None if self.valid is None else self.valid[rows]
        return replace(self, start=self.start[rows], count=self.count[rows], valid=valid)

    def present(self) -> Bools:
        if self.valid is None:
            return np.ones(len(self.start), dtype=np.bool_)
        return self.valid


Property = Column | ObjectList


def text(codes: npt.NDArray[Any], vocabulary: Sequence[str], valid: Bools | None = None) -> Column:
    return Column(Kind.TEXT, codes.astype(np.int64), valid, vocabulary=tuple(vocabulary))


def const_text(value: str, rows: int) -> Column:
    return Column(Kind.TEXT, np.zeros(rows, dtype=np.int64), vocabulary=(value,))


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Track events of one chunk of customers, sorted by (timestamp, customer, ordinal).

    `customer` is the global customer number; `ordinal` counts each customer's events from 0
    in time order, so (customer, ordinal) names an event for good and gives it its messageId.
    `user_id` is missing on anonymous events and `anonymous_id` on identified ones that were
    never anonymous.

    Properties are kept in blocks (one per kind of generated row, with only the properties
    those rows have): row i's are row `block_row[i]` of `blocks[block[i]]`.
    """

    timestamp: Int64s
    customer: Int64s
    ordinal: Int64s
    event: Column
    user_id: Column
    anonymous_id: Column
    blocks: Sequence[Mapping[str, Property]]
    block: Int64s
    block_row: Int64s
    context: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, rows: Int64s) -> EventBatch:
        return EventBatch(
            timestamp=self.timestamp[rows],
            customer=self.customer[rows],
            ordinal=self.ordinal[rows],
            event=self.event.take(rows),
            user_id=self.user_id.take(rows),
            anonymous_id=self.anonymous_id.take(rows),
            blocks=self.blocks,
            block=self.block[rows],
            block_row=self.block_row[rows],
            context={k: v.take(rows) for k, v in self.context.items()},
        )

    def names(self) -> list[str]:
        return [self.event.vocabulary[int(c)] for c in self.event.values]

    def properties(self, index: int) -> dict[str, Any]:
        """One event's properties as plain Python."""
        block = self.blocks[int(self.block[index])]
        at = int(self.block_row[index])
        properties: dict[str, Any] = {}
        for key, prop in block.items():
            if not prop.present()[at]:
                continue
            if isinstance(prop, ObjectList):
                first = int(prop.start[at])
                properties[key] = [
                    {k: c.python(i) for k, c in prop.items.items() if c.present()[i]}
                    for i in range(first, first + int(prop.count[at]))
                ]
            else:
                properties[key] = prop.python(at)
        return properties

    def row(self, index: int) -> dict[str, Any]:
        """One event as a plain dict (tests, debugging)."""
        return {
            "event": self.event.python(index),
            "timestamp": int(self.timestamp[index]),
            "customer": int(self.customer[index]),
            "ordinal": int(self.ordinal[index]),
            "userId": self.user_id.python(index),
            "anonymousId": self.anonymous_id.python(index),
            "properties": self.properties(index),
            "context": {k: c.python(index) for k, c in self.context.items() if c.present()[index]},
        }


@dataclass(frozen=True, slots=True)
class CustomerBatch:
    """Customer profiles of one chunk, in sign-up order: one Segment identify each.

    `traits` are ordered as they should be written; `signed_up` is the identify's timestamp.
    Traits describe the profile at the end of the generated period (products held, last
    refusal), as an export from a CRM would.
    """

    customer: Int64s
    user_id: Column
    signed_up: Int64s
    traits: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.customer)


@dataclass(frozen=True, slots=True)
class LatentStates:
    """The hidden state of a chunk's customers that the campaign response model reads.

    `goal_rates[event]` is how often a customer does the event per (operational) day while
    active; `active_until` is when they dropped out (ms; int64 max: still active at the end).
    """

    customer: Int64s
    user_id: Column
    active_until: Int64s
    engagement: Floats
    order_value: Floats
    goal_rates: Mapping[str, Floats]


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one chunk of customers produces, plus counters the truth file reports."""

    index: int
    customers: CustomerBatch
    events: EventBatch
    latent: LatentStates
    counters: Mapping[str, float] = field(default_factory=dict)
