"""Queries compiled once and run at many `as_of`s: a simulated run refreshes the segments
every simulated day, and building and printing the one refresh query through Ibis costs
about a second whatever the number of customers (cProfile, 10 K customers x 2 weeks).

How: the query is built with `as_of` an `AsOf` (a datetime subclass; Python keeps the subclass
through `as_of - 30d`, `min(...)` and `astimezone`, so every moment computed from it is one).
While `prepare` builds, the compiler's `_timestamp` turns each such moment into a slot,
`as_of + offset` (the offset fixed by the definition: `-30d`), printed as a bound parameter
(DuckDB) or, for engines bound otherwise, replaced in the printed tree by the literal Ibis
would print (PostgreSQL). The parameter values are computed the way the compiler computes
its literals (`as_of - 30d` in Python), so a prepared query gives what a fresh compile gives;
tests/store/test_prepared_segments.py checks that at several `as_of`s on both engines.

A definition whose query depends on `as_of` otherwise (anniversaries list the month-days
from `as_of`) marks the build as not reusable and is compiled per `as_of` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import ibis
import ibis.backends.sql.compilers as sc
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import pyarrow as pa
import sqlglot.expressions as sge

from orbita.engine.segments.tables import Dialect

Expr = Any  # Ibis ships no type stubs that mypy can use

_TIMESTAMP = dt.Timestamp(timezone="UTC")
# Slot i prints as this moment plus i seconds until the compiler below replaces it: year 1
# is no date a strategy holds (a constant that early makes the build not reusable).
_SLOT_BASE = datetime(1, 1, 1, tzinfo=UTC)
_SLOTS_MAX = 86_400


class AsOf(datetime):
    """`as_of` while a query is prepared, and every moment computed from it."""

    @classmethod
    def of(cls, moment: datetime) -> AsOf:
        utc = moment.astimezone(UTC)
        return cls(
            utc.year,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            utc.microsecond,
            tzinfo=UTC,
        )


@dataclass(slots=True)
class Slots:
    """The moments of one prepared query, each `as_of + offset`."""

    origin: datetime
    offsets: list[timedelta] = field(default_factory=list)
    reusable: bool = True

    def literal(self, moment: datetime) -> Expr:
        offset = moment - self.origin
        if offset not in self.offsets:
            self.offsets.append(offset)
        index = self.offsets.index(offset)
        if index >= _SLOTS_MAX:
            self.reusable = False
        return ibis.literal(_SLOT_BASE + timedelta(seconds=index), type=_TIMESTAMP)

    def values(self, as_of: datetime) -> dict[str, datetime]:
        moment = as_of.astimezone(UTC)
        return {_name(index): moment + offset for index, offset in enumerate(self.offsets)}


_COLLECTING: ContextVar[Slots | None] = ContextVar("orbita_as_of_slots", default=None)


def timestamp_literal(moment: datetime) -> Expr:
    """The compiler's timestamp literal: a slot while a query is prepared and `moment`
    comes from `as_of`; the moment itself otherwise."""
    slots = _COLLECTING.get()
    if slots is not None:
        if isinstance(moment, AsOf):
            return slots.literal(moment)
        if moment.astimezone(UTC).year == _SLOT_BASE.year:
            slots.reusable = False  # a constant a slot could be taken for
    return ibis.literal(moment, type=_TIMESTAMP)


def not_reusable() -> None:
    """Called by a part of the compiler whose query depends on `as_of` other than through
    timestamps (`anniversary_within`)."""
    slots = _COLLECTING.get()
    if slots is not None:
        slots.reusable = False


@contextmanager
def collecting(as_of: datetime) -> Iterator[tuple[AsOf, Slots]]:
    """Build a query to prepare inside this block, at the `AsOf` it yields."""
    marked = AsOf.of(as_of)
    slots = Slots(origin=marked)
    token = _COLLECTING.set(slots)
    try:
        yield marked, slots
    finally:
        _COLLECTING.reset(token)


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """One query printed once; `sql(as_of)` gives what to run at each `as_of`."""

    dialect: Dialect
    tree: sge.Expression  # slots as placeholders named p0, p1, ...
    slots: Slots
    schema: Any  # the Ibis schema of the result
    text: str  # the tree printed: the SQL with placeholders (DuckDB binds them)
    used: frozenset[str]  # the placeholders in it (a build may make slots it drops)

    def sql(self, as_of: datetime) -> tuple[str, dict[str, datetime]]:
        """The SQL to run at `as_of` and its parameters (none where literals are printed)."""
        values = {k: v for k, v in self.slots.values(as_of).items() if k in self.used}
        if self.dialect == "duckdb":
            return self.text, values
        compiler = sc.postgres.compiler if self.dialect == "postgres" else None
        if compiler is None:
            raise ValueError(f"prepared queries do not run on {self.dialect} yet")

        def literal(node: sge.Expression) -> sge.Expression:
            if isinstance(node, sge.Placeholder):
                moment = values[str(node.name)]
                printed: sge.Expression = compiler.visit_Literal(
                    ops.Literal(moment, _TIMESTAMP), value=moment, dtype=_TIMESTAMP
                )
                return printed
            return node

        return self.tree.transform(literal).sql(dialect=compiler.dialect), {}

    def to_pyarrow(self, backend: Any, as_of: datetime) -> pa.Table:
        """Run a prepared SELECT on an Ibis DuckDB backend; the result typed as Ibis types it."""
        from ibis.backends.duckdb.converter import DuckDBPyArrowData

        if self.dialect != "duckdb":
            raise ValueError("prepared results are read on DuckDB only")
        text, values = self.sql(as_of)
        table = backend.con.sql(text, params=values).to_arrow_table()
        return DuckDBPyArrowData.convert_table(table, self.schema)

    def fetchall(self, backend: Any, as_of: datetime) -> list[tuple[Any, ...]]:
        """The rows of a prepared SELECT at `as_of`, on DuckDB or PostgreSQL."""
        text, values = self.sql(as_of)
        if self.dialect == "duckdb":
            rows: list[tuple[Any, ...]] = backend.con.sql(text, params=values).fetchall()
            return rows
        with backend.raw_sql(text) as cursor:
            return list(cursor.fetchall())

    def insert_into(self, backend: Any, name: str, as_of: datetime) -> None:
        """INSERT INTO `name` (the result's columns) the query at `as_of` (DuckDB)."""
        if self.dialect != "duckdb":
            raise ValueError("prepared inserts run on DuckDB only")
        text, values = self.sql(as_of)
        dialect = _compiler(self.dialect).dialect
        target = sge.to_identifier(name, quoted=True).sql(dialect=dialect)
        columns = ", ".join(
            sge.to_identifier(column, quoted=True).sql(dialect=dialect)
            for column in self.schema.names
        )
        statement = f"INSERT INTO {target} ({columns}) {text}"  # our identifiers and SQL
        backend.con.execute(statement, values).fetchall()  # drained: the connection is free

    def create_temp_table(self, backend: Any, name: str, as_of: datetime) -> None:
        """CREATE TEMPORARY TABLE `name` AS the query at `as_of` (replacing one of that name)."""
        text, values = self.sql(as_of)
        quoted = sge.to_identifier(name, quoted=True).sql(dialect=_compiler(self.dialect).dialect)
        backend.drop_table(name, force=True)
        statement = f"CREATE TEMPORARY TABLE {quoted} AS {text}"  # our identifiers and SQL
        if self.dialect == "duckdb":
            backend.con.execute(statement, values).fetchall()  # drained: the connection is free
        else:
            with backend.raw_sql(statement):
                pass


def _name(index: int) -> str:
    return f"p{index}"


@cache
def _compiler(dialect: Dialect) -> Any:
    """The engine's Ibis compiler, printing slots as placeholders."""
    base = type(getattr(sc, dialect).compiler)

    class _Slotted(base):  # type: ignore[misc,valid-type]  # ibis is untyped
        def visit_NonNullLiteral(self, op: Any, *, value: Any, dtype: Any) -> Any:
            if dtype.is_timestamp() and isinstance(value, datetime) and value.year == 1:
                index = int(
                    (value.replace(tzinfo=None) - _SLOT_BASE.replace(tzinfo=None)).total_seconds()
                )
                placeholder = sge.Placeholder(this=_name(index))
                if dialect == "duckdb":
                    return sge.Cast(this=placeholder, to=self.type_mapper.from_ibis(dtype))
                return placeholder
            return super().visit_NonNullLiteral(op, value=value, dtype=dtype)

    _Slotted.__name__ = f"Slotted{base.__name__}"
    return _Slotted()


def prepare(
    build: Callable[[datetime], Expr], *, as_of: datetime, dialect: Dialect
) -> PreparedQuery | None:
    """`build(as_of)` compiled once with `as_of` a parameter; None when its query depends on
    `as_of` in a way a parameter cannot carry (compile it per `as_of` then)."""
    with collecting(as_of) as (marked, slots):
        expr = build(marked)
    if not slots.reusable:
        return None
    compiler = _compiler(dialect)
    table = expr.as_table()
    tree = compiler.to_sqlglot(table.unbind())
    return PreparedQuery(
        dialect=dialect,
        tree=tree,
        slots=slots,
        schema=table.schema(),
        text=tree.sql(dialect=compiler.dialect),
        used=frozenset(str(node.name) for node in tree.find_all(sge.Placeholder)),
    )
