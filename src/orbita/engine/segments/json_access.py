"""Reading one key of a JSON document, typed, in each engine's own functions.

Typed means a value of another JSON type reads as NULL: `{price: {gte: 50}}` never matches
the text "50". DuckDB and PostgreSQL use Ibis' JSON operations; ClickHouse and Spark keep
JSON as text, and Ibis has no portable rule for them (ClickHouse: none at all; Spark: a
Python UDF), so they get their native functions as Ibis builtins. Spark's
`get_json_object` cannot tell a number from its text, so numbers and booleans are read with
a typed `from_json`; a text test on Spark still matches a number written as the same text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import ibis
import ibis.expr.datatypes as dt

from orbita.engine.segments.tables import Dialect


class JsonAccess(Protocol):
    def text(self, doc: Any, key: str) -> Any: ...
    def number(self, doc: Any, key: str) -> Any: ...
    def boolean(self, doc: Any, key: str) -> Any: ...
    def present(self, doc: Any, key: str) -> Any:
        """True when the key holds a non-null value; never NULL itself."""
        ...


Builtin = Callable[[Callable[..., Any]], Callable[..., Any]]


def _builtin(name: str) -> Builtin:
    """An engine function Ibis prints by name; the decorated body is never run."""
    decorator: Builtin = ibis.udf.scalar.builtin(name=name)
    return decorator


@_builtin("json_type")
def _duckdb_json_type(doc: dt.JSON) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("json_type")
def _duckdb_type_at(doc: dt.JSON, path: str) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("json_extract_string")
def _duckdb_string_at(doc: dt.JSON, path: str) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("json_extract")
def _duckdb_value_at(doc: dt.JSON, path: str) -> dt.JSON: ...  # builtin


@_builtin("jsonb_typeof")
def _postgres_jsonb_typeof(doc: dt.JSON(binary=True)) -> str: ...  # type: ignore[empty-body,valid-type]  # builtin


@_builtin("json_typeof")
def _postgres_json_typeof(doc: dt.JSON) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("JSONType")
def _clickhouse_type(doc: str, key: str) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("JSONHas")
def _clickhouse_has(doc: str, key: str) -> bool: ...  # type: ignore[empty-body]  # builtin


@_builtin("JSONExtractString")
def _clickhouse_string(doc: str, key: str) -> str: ...  # type: ignore[empty-body]  # builtin


@_builtin("JSONExtractFloat")
def _clickhouse_float(doc: str, key: str) -> float: ...  # type: ignore[empty-body]  # builtin


@_builtin("JSONExtractBool")
def _clickhouse_bool(doc: str, key: str) -> bool: ...  # type: ignore[empty-body]  # builtin


@_builtin("get_json_object")
def _spark_get(doc: str, path: str) -> str: ...  # type: ignore[empty-body]  # builtin


class NativeJson:
    """DuckDB and PostgreSQL: Ibis' typed unwraps; a builtin for the JSON type name."""

    def __init__(self, *, dialect: Dialect) -> None:
        self._dialect = dialect

    def text(self, doc: Any, key: str) -> Any:
        return doc[key].str

    def number(self, doc: Any, key: str) -> Any:
        return doc[key].float

    def boolean(self, doc: Any, key: str) -> Any:
        return doc[key].bool

    def present(self, doc: Any, key: str) -> Any:
        # A missing key has no type (NULL); a JSON null has the type 'null' / 'NULL'.
        if self._dialect == "postgres":
            binary = doc.type().binary
            kind = (_postgres_jsonb_typeof if binary else _postgres_json_typeof)(doc[key])
        else:
            kind = _duckdb_json_type(doc[key])
        return kind.fill_null("null").lower() != "null"


class DuckDBJson(NativeJson):
    """DuckDB with a JSON path per read: `json_type(doc, '$.k')` and
    `json_extract_string(doc, '$.k')` read the key in place, where Ibis' `doc -> '$.k'` first
    builds the value as a JSON document and then types and unwraps it — three times slower
    on a property filter over 50 M events (bench/segments.py), and as fast as a hand-written
    `->>` once the type test also takes the path."""

    def __init__(self) -> None:
        super().__init__(dialect="duckdb")

    @staticmethod
    def _path(key: str) -> str:
        escaped = key.replace("\\", "\\\\").replace('"', '\\"')
        return f'$."{escaped}"'

    def parts(self, doc: Any, key: str) -> tuple[Any, Any]:
        """The JSON type name and the text of a key's value: every typed read of the key is
        made of these two, so a scan that reads a key many times can compute them once
        (engine/segments/features.py) and read them with the `*_of` functions."""
        path = self._path(key)
        return _duckdb_type_at(doc, path), _duckdb_string_at(doc, path)

    def value(self, doc: Any, key: str) -> Any:
        """The key's value as a small JSON document: parsed out of `doc` once, then read by
        `value_parts` (a scan reading a key many times pays one parse of the document)."""
        return _duckdb_value_at(doc, self._path(key))

    @staticmethod
    def value_parts(value: Any) -> tuple[Any, Any]:
        """`parts` of a value taken by `value`."""
        return _duckdb_json_type(value), _duckdb_string_at(value, "$")

    @staticmethod
    def text_of(kind: Any, value: Any) -> Any:
        return ibis.ifelse(kind == "VARCHAR", value, None)

    @staticmethod
    def number_of(kind: Any, value: Any) -> Any:
        return ibis.ifelse(kind.isin(["BIGINT", "UBIGINT", "DOUBLE"]), value.cast("float64"), None)

    @staticmethod
    def boolean_of(kind: Any, value: Any) -> Any:
        return ibis.ifelse(kind == "BOOLEAN", value == "true", None)

    @staticmethod
    def present_of(kind: Any) -> Any:
        return kind.fill_null("NULL") != "NULL"

    def text(self, doc: Any, key: str) -> Any:
        return self.text_of(*self.parts(doc, key))

    def number(self, doc: Any, key: str) -> Any:
        return self.number_of(*self.parts(doc, key))

    def boolean(self, doc: Any, key: str) -> Any:
        return self.boolean_of(*self.parts(doc, key))

    def present(self, doc: Any, key: str) -> Any:
        return self.present_of(_duckdb_type_at(doc, self._path(key)))


class ClickHouseJson:
    """JSONType names the type of the key's value ('String', 'Int64', 'Double', 'Bool',
    'Null'; 'Null' also for a missing key)."""

    def text(self, doc: Any, key: str) -> Any:
        return ibis.ifelse(
            _clickhouse_type(doc, key) == "String", _clickhouse_string(doc, key), None
        )

    def number(self, doc: Any, key: str) -> Any:
        kind = _clickhouse_type(doc, key)
        return ibis.ifelse(
            kind.isin(["Int64", "UInt64", "Double"]), _clickhouse_float(doc, key), None
        )

    def boolean(self, doc: Any, key: str) -> Any:
        return ibis.ifelse(_clickhouse_type(doc, key) == "Bool", _clickhouse_bool(doc, key), None)

    def present(self, doc: Any, key: str) -> Any:
        return _clickhouse_has(doc, key) & (_clickhouse_type(doc, key) != "Null")


class SparkJson:
    """get_json_object returns the value as text (NULL when missing or null)."""

    @staticmethod
    def _path(key: str) -> str:
        escaped = key.replace("\\", "\\\\").replace("'", "\\'")
        return f"$['{escaped}']"

    def text(self, doc: Any, key: str) -> Any:
        return _spark_get(doc, self._path(key))

    def number(self, doc: Any, key: str) -> Any:
        # from_json with a typed struct keeps the JSON type: "150" (text) reads as NULL.
        return _spark_typed(doc, key, dt.float64, "double")

    def boolean(self, doc: Any, key: str) -> Any:
        return _spark_typed(doc, key, dt.boolean, "boolean")

    def present(self, doc: Any, key: str) -> Any:
        return _spark_get(doc, self._path(key)).notnull()


def _spark_typed(doc: Any, key: str, kind: dt.DataType, ddl: str) -> Any:
    """`from_json(doc, 'struct<`key`: type>').key`: the value only when its JSON type fits."""

    def from_json(doc: str, schema: str) -> None: ...  # never run: Spark's own function

    builtin = ibis.udf.scalar.builtin(
        name="from_json", signature=((dt.string, dt.string), dt.Struct({key: kind}))
    )(from_json)
    field = key.replace("`", "``")
    return builtin(doc, ibis.literal(f"struct<`{field}`: {ddl}>"))[key]


def json_access(dialect: Dialect) -> JsonAccess:
    if dialect == "clickhouse":
        return ClickHouseJson()
    if dialect == "pyspark":
        return SparkJson()
    if dialect == "duckdb":
        return DuckDBJson()
    return NativeJson(dialect=dialect)
