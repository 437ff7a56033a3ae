"""Generated customers and events for segment tests, and loaders into real engines.

The data is small (a few hundred customers, a few thousand events), seeded, and built to hit
the edges the segment language defines: values of the wrong JSON type, JSON nulls, missing
keys, unparseable dates, 29 February birthdays, timestamp ties, events after `as_of`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from orbita.engine.segments.reference import ReferenceData

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CATEGORIES = ["shoes", "dresses", "bags", "hats", "Shoes"]
EVENT_NAMES = [
    "Order Completed",
    "Product Viewed",
    "Product Added",
    "Email Opened",
    "Email Clicked",
]


@dataclass(frozen=True)
class SegmentData:
    customers: list[dict[str, Any]]
    events: list[dict[str, Any]]
    rfm_cells: list[dict[str, Any]]
    predictions: list[dict[str, Any]]

    def reference(self) -> ReferenceData:
        return ReferenceData(
            events=self.events,
            customers=self.customers,
            rfm_cells=self.rfm_cells,
            predictions=self.predictions,
        )


def _maybe(rng: random.Random, value: Any, *, p: float) -> Any:
    return value if rng.random() < p else None


def _traits(rng: random.Random, *, index: int) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    country = rng.choice(["UA", "PL", "DE", "UA", "PL", None, 42, "missing"])
    if country != "missing":
        traits["country"] = country  # None is a JSON null; 42 the wrong type
    if rng.random() < 0.7:
        traits["age"] = rng.choice([rng.randint(16, 80), "forty"])
    if rng.random() < 0.5:
        traits["vip"] = rng.choice([True, False, None, "yes"])
    if rng.random() < 0.8:
        year = rng.randint(1960, 2005)
        birthday = (datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 364))).date()
        choice = rng.random()
        if choice < 0.05:
            traits["birthday"] = "unknown"
        elif choice < 0.1:
            traits["birthday"] = "1992-02-29"
        elif choice < 0.25:
            # Around as_of (1 March), so anniversary windows catch someone.
            traits["birthday"] = f"{year}-03-0{rng.randint(1, 5)}"
        else:
            traits["birthday"] = birthday.isoformat()
    if rng.random() < 0.6:
        moment = AS_OF - timedelta(days=rng.uniform(-20, 60))
        traits["trial_ends_at"] = moment.isoformat().replace("+00:00", "Z")
    traits["plan"] = rng.choice(["free", "pro", "premium", "pro trial"])
    traits["name"] = f"Customer {index}"
    return traits


def generate(*, seed: int = 7, customers: int = 300, events: int = 4000) -> SegmentData:
    rng = random.Random(seed)
    people = []
    for index in range(1, customers + 1):
        created = AS_OF - timedelta(days=rng.uniform(0, 400), seconds=rng.randint(0, 86400))
        people.append(
            {
                "customer_id": index,
                "user_id": f"u{index:05d}",
                "email": _maybe(rng, f"c{index}@example.com", p=0.85),
                "phone": _maybe(rng, f"+38050{index:07d}", p=0.4),
                "telegram_chat_id": None,
                "timezone": rng.choice(["Europe/Kyiv", "Europe/Warsaw", None]),
                "locale": rng.choice(["uk", "pl", "en"]),
                "traits": _traits(rng, index=index),
                "created_at": created,
                "updated_at": created,
            }
        )
    # Activity is skewed: a few customers do most things, many do little or nothing.
    weights = [rng.paretovariate(1.2) for _ in people]
    rows = []
    for number in range(events):
        customer = rng.choices(people, weights=weights)[0]
        name = rng.choices(EVENT_NAMES, weights=[2, 6, 3, 3, 1])[0]
        # A few events after as_of: they must never count.
        offset = timedelta(days=rng.uniform(-3, 200))
        stamp = (AS_OF - offset).replace(microsecond=0)
        if number % 97 == 0 and rows:
            stamp = rows[-1]["timestamp"]  # ties on the timestamp
        properties: dict[str, Any] = {}
        if name in ("Order Completed", "Product Viewed", "Product Added"):
            properties["category"] = rng.choice([*CATEGORIES, None])
            price = round(rng.uniform(5, 200), 2)
            properties["price"] = rng.choice([price, price, price, str(price)])
        if name == "Order Completed":
            revenue = round(rng.uniform(10, 400), 2)
            properties["revenue"] = revenue if rng.random() > 0.05 else str(revenue)
            properties["coupon"] = rng.choice([True, False, None])
        kind = "track"
        if rng.random() < 0.05:
            kind, name = "page", "Pricing"
        rows.append(
            {
                "message_id": f"m{number:06d}",
                "customer_id": customer["customer_id"],
                "user_id": customer["user_id"],
                "anonymous_id": None,
                "type": kind,
                "name": name,
                "properties": properties,
                "context": {},
                "timestamp": stamp,
                "received_at": stamp,
            }
        )
    # Sequences: carts followed by an order within hours, or not.
    for index in range(0, customers, 3):
        start = AS_OF - timedelta(hours=rng.uniform(0.5, 72))
        rows.append(_event(rows, index + 1, "Product Added", start, {"category": "shoes"}))
        if rng.random() < 0.5:
            later = start + timedelta(hours=rng.uniform(0.1, 8))
            rows.append(_event(rows, index + 1, "Order Completed", later, {"revenue": 50.0}))
    cells = ["champions", "loyal", "at_risk", "lost"]
    rfm = [
        {"customer_id": person["customer_id"], "cell": rng.choice(cells)}
        for person in people
        if rng.random() < 0.8
    ]
    predictions = [
        {
            "customer_id": person["customer_id"],
            "ltv": round(rng.uniform(0, 2000), 2),
            "churn_probability": _maybe(rng, round(rng.random(), 3), p=0.9),
        }
        for person in people
        if rng.random() < 0.9
    ]
    return SegmentData(customers=people, events=rows, rfm_cells=rfm, predictions=predictions)


def _event(
    rows: list[dict[str, Any]], customer_id: int, name: str, at: datetime, props: dict[str, Any]
) -> dict[str, Any]:
    at = at.replace(microsecond=0)
    return {
        "message_id": f"s{len(rows):06d}",
        "customer_id": customer_id,
        "user_id": f"u{customer_id:05d}",
        "anonymous_id": None,
        "type": "track",
        "name": name,
        "properties": props,
        "context": {},
        "timestamp": at,
        "received_at": at,
    }


# --- loading into engines -------------------------------------------------------------------

_TS = pa.timestamp("us", tz="UTC")


def _events_arrow(data: SegmentData) -> pa.Table:
    rows = data.events
    return pa.table(
        {
            "message_id": pa.array([r["message_id"] for r in rows], pa.string()),
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
            "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
            "anonymous_id": pa.array([r["anonymous_id"] for r in rows], pa.string()),
            "type": pa.array([r["type"] for r in rows], pa.string()),
            "name": pa.array([r["name"] for r in rows], pa.string()),
            "properties": pa.array([json.dumps(r["properties"]) for r in rows], pa.string()),
            "context": pa.array([json.dumps(r["context"]) for r in rows], pa.string()),
            "timestamp": pa.array([r["timestamp"] for r in rows], _TS),
            "received_at": pa.array([r["received_at"] for r in rows], _TS),
        }
    )


def _customers_arrow(data: SegmentData) -> pa.Table:
    rows = data.customers
    columns: dict[str, Any] = {
        "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64())
    }
    for name in ("user_id", "email", "phone", "telegram_chat_id", "timezone", "locale"):
        columns[name] = pa.array([r[name] for r in rows], pa.string())
    columns["traits"] = pa.array([json.dumps(r["traits"]) for r in rows], pa.string())
    for name in ("created_at", "updated_at"):
        columns[name] = pa.array([r[name] for r in rows], _TS)
    return pa.table(columns)


def load(con: Any, data: SegmentData, *, json_type: str) -> None:
    """Create the four tables on an Ibis connection; JSON travels as text and is cast in SQL
    (the way the stores hold it: DuckDB JSON, PostgreSQL jsonb)."""
    con.create_table("events_text", _events_arrow(data), overwrite=True)
    con.create_table("customers_text", _customers_arrow(data), overwrite=True)
    con.raw_sql(
        "CREATE TABLE events AS SELECT message_id, customer_id, user_id, anonymous_id, type,"
        f" name, CAST(properties AS {json_type}) AS properties,"
        f" CAST(context AS {json_type}) AS context, timestamp, received_at FROM events_text"
    )
    con.raw_sql(
        "CREATE TABLE customers AS SELECT customer_id, user_id, email, phone,"
        f" telegram_chat_id, timezone, locale, CAST(traits AS {json_type}) AS traits,"
        " created_at, updated_at FROM customers_text"
    )
    con.create_table(
        "rfm_cells",
        pa.Table.from_pylist(
            data.rfm_cells, schema=pa.schema([("customer_id", pa.int64()), ("cell", pa.string())])
        ),
        overwrite=True,
    )
    con.create_table(
        "predictions",
        pa.Table.from_pylist(
            data.predictions,
            schema=pa.schema(
                [
                    ("customer_id", pa.int64()),
                    ("ltv", pa.float64()),
                    ("churn_probability", pa.float64()),
                ]
            ),
        ),
        overwrite=True,
    )
