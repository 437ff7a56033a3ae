"""The tables segment queries read, as unbound Ibis tables: the contract with the stores.

Unbound (`ibis.table(schema, name=...)`) so the printed SQL names no connection's catalogue
and one expression runs on any backend that holds tables of these names and columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import ibis
import ibis.expr.datatypes as dt

Dialect = Literal["duckdb", "postgres", "clickhouse", "pyspark"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)

# Profile columns of `customers`; any other trait name is read from the `traits` JSON.
PROFILE_TEXT = frozenset({"user_id", "email", "phone", "telegram_chat_id", "timezone", "locale"})
PROFILE_TIMES = frozenset({"created_at", "updated_at"})


def json_type(dialect: Dialect) -> dt.DataType:
    """How each engine holds JSON documents: PostgreSQL as jsonb, ClickHouse and Spark as
    text parsed by their JSON functions, DuckDB as its JSON type."""
    if dialect == "postgres":
        return dt.JSON(binary=True)
    if dialect in ("clickhouse", "pyspark"):
        return dt.string
    return dt.JSON()


def events_schema(dialect: Dialect) -> dict[str, Any]:
    json = json_type(dialect)
    return {
        "message_id": "string",
        "customer_id": "int64",
        "user_id": "string",
        "anonymous_id": "string",
        "type": "string",
        "name": "string",
        "properties": json,
        "context": json,
        "timestamp": "timestamp('UTC')",
        "received_at": "timestamp('UTC')",
    }


def customers_schema(dialect: Dialect) -> dict[str, Any]:
    return {
        "customer_id": "int64",
        "user_id": "string",
        "email": "string",
        "phone": "string",
        "telegram_chat_id": "string",
        "timezone": "string",
        "locale": "string",
        "traits": json_type(dialect),
        "created_at": "timestamp('UTC')",
        "updated_at": "timestamp('UTC')",
    }


# Seams the analytics step fills: one RFM cell and the predicted values per customer.
RFM_CELLS_SCHEMA = {"customer_id": "int64", "cell": "string"}
PREDICTIONS_SCHEMA = {"customer_id": "int64", "ltv": "float64", "churn_probability": "float64"}


@dataclass(frozen=True, slots=True)
class SegmentTables:
    """The unbound tables of one dialect, and the dialect (it decides JSON access)."""

    dialect: Dialect
    events: Any
    customers: Any
    rfm_cells: Any
    predictions: Any


def segment_tables(dialect: Dialect = "duckdb") -> SegmentTables:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    return SegmentTables(
        dialect=dialect,
        events=ibis.table(events_schema(dialect), name="events"),
        customers=ibis.table(customers_schema(dialect), name="customers"),
        rfm_cells=ibis.table(RFM_CELLS_SCHEMA, name="rfm_cells"),
        predictions=ibis.table(PREDICTIONS_SCHEMA, name="predictions"),
    )
