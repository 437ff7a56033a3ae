"""What every generated store shares: chunks, random streams, sign-ups, the store registry.

Customers are generated in chunks of `CHUNK` customers (in sign-up order) and every chunk
draws from its own random stream, derived from (seed, store, purpose, chunk). A chunk can
thus be made alone, in any order or in another process, and the output never depends on how
the work was scheduled. (The chunk size is part of the recipe: another size, other draws.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from orbita.simulation.calendar import DIURNAL, Calendar, at_local_hour
from orbita.simulation.records import DAY_MS, HOUR_MS, Chunk, Int64s, LatentStates

CHUNK = 10_000
USER_PREFIX = "u"
USER_WIDTH = 7

# Purposes of random streams.
SIGNUPS, CATALOGUE, LATENT, BEHAVIOUR = 1, 2, 3, 4


def stream(seed: int, store: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, store, purpose, index]))
    )


def user_id(customer: int) -> str:
    """The userId of the customer numbered `customer` (0-based, in sign-up order)."""
    return f"{USER_PREFIX}{customer + 1:0{USER_WIDTH}d}"


def sample_signups(
    rng: np.random.Generator,
    *,
    calendar: Calendar,
    customers: int,
    yearly_growth: float,
    utc_offset: int,
) -> Int64s:
    """Every customer's sign-up time, sorted: customer numbers follow sign-up order."""
    weights = calendar.acquisition_weights(yearly_growth=yearly_growth)
    day = rng.choice(calendar.days, size=customers, p=weights).astype(np.int64)
    midnight = calendar.start_ms + day * DAY_MS
    offsets = np.full(customers, utc_offset, dtype=np.int64)
    ms = at_local_hour(rng, midnight, utc_offset_hours=offsets, profile=DIURNAL)
    # A local day straddles the period's edges: move the stragglers a day inwards, and leave
    # time for the sign-up visit itself before the period ends.
    ms = np.where(ms < calendar.start_ms, ms + DAY_MS, ms)
    ms = np.where(ms > calendar.end_ms - 2 * HOUR_MS, ms - DAY_MS, ms)
    ms = np.clip(ms, calendar.start_ms, calendar.end_ms - 2 * HOUR_MS)
    ms.sort()
    return ms


class Store:
    """A generated store: chunks of customers with their events, and the truth behind them.

    The base holds what the stores share: the calendar, sign-ups in order, chunks and the
    random streams of each chunk.
    """

    name: ClassVar[str]
    code: ClassVar[int]  # part of every random stream's key

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        start: datetime,
        days: int,
        chunk_size: int,
        yearly_growth: float,
    ) -> None:
        self.seed = seed
        self.customers = customers
        self.chunk_size = chunk_size
        self.calendar = Calendar.build(start=start, days=days)
        self.signups = sample_signups(
            stream(seed, self.code, SIGNUPS),
            calendar=self.calendar,
            customers=customers,
            yearly_growth=yearly_growth,
            utc_offset=2,  # the stores' home market: Kyiv, Bucharest, Vilnius
        )

    @property
    def chunks(self) -> int:
        return chunk_count(self.customers, self.chunk_size)

    def chunk_customers(self, index: int) -> tuple[np.random.Generator, Int64s, Int64s]:
        """A chunk's stream for who its customers are, their numbers and sign-up times."""
        first, stop = chunk_bounds(index, self.customers, self.chunk_size)
        rng = stream(self.seed, self.code, LATENT, index)
        return rng, np.arange(first, stop, dtype=np.int64), self.signups[first:stop]

    def behaviour(self, index: int) -> np.random.Generator:
        """A chunk's stream for what its customers do."""
        return stream(self.seed, self.code, BEHAVIOUR, index)

    def chunk(self, index: int) -> Chunk:
        raise NotImplementedError

    def latent(self, index: int) -> LatentStates:
        return self.chunk(index).latent

    def truth(self) -> dict[str, Any]:
        raise NotImplementedError


def chunk_bounds(index: int, customers: int, size: int) -> tuple[int, int]:
    first = index * size
    if index < 0 or first >= customers:
        raise IndexError(f"no chunk {index}")
    return first, min(first + size, customers)


def chunk_count(customers: int, size: int) -> int:
    return -(-customers // size)


def sum_counters(chunks: list[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for counters in chunks:
        for key, value in counters.items():
            total[key] = total.get(key, 0.0) + value
    return total


def make_store(
    *,
    store: str,
    seed: int,
    customers: int,
    start: datetime,
    days: int,
    chunk_size: int = CHUNK,
) -> Store:
    """The generator for `store` ("clothing-store" or "bank")."""
    from orbita.simulation.bank import Bank
    from orbita.simulation.clothing import ClothingStore

    if store == ClothingStore.name:
        return ClothingStore(
            seed=seed, customers=customers, start=start, days=days, chunk_size=chunk_size
        )
    if store == Bank.name:
        return Bank(seed=seed, customers=customers, start=start, days=days, chunk_size=chunk_size)
    raise ValueError(f"unknown store {store!r}: use clothing-store or bank")


STORES = ("clothing-store", "bank")
