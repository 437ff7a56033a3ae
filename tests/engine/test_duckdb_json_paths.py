"""DuckDB reads JSON keys by path: keys with dots, quotes and backslashes are read whole,
and a value of another JSON type reads as NULL."""

from __future__ import annotations

import ibis

from orbita.engine.segments.json_access import json_access


def test_odd_keys_and_types() -> None:
    con = ibis.duckdb.connect()
    docs = ['{"a.b": "x", "q\\"k": 5, "s\\\\l": true, "n": null}', '{"a.b": 1, "q\\"k": "5"}']
    con.raw_sql("CREATE TABLE e (i INT, properties JSON)")
    for i, doc in enumerate(docs):
        con.raw_sql(f"INSERT INTO e VALUES ({i}, '{doc}')")
    t = con.table("e")
    access = json_access("duckdb")
    row = (
        t.order_by("i")
        .select(
            text=access.text(t.properties, "a.b"),
            number=access.number(t.properties, 'q"k'),
            flag=access.boolean(t.properties, "s\\l"),
            null_present=access.present(t.properties, "n"),
            missing_present=access.present(t.properties, "zz"),
        )
        .to_pyarrow()
        .to_pylist()
    )
    assert row[0] == {
        "text": "x", "number": 5.0, "flag": True, "null_present": False, "missing_present": False
    }  # fmt: skip
    assert row[1]["text"] is None and row[1]["number"] is None  # a number, a text: other types
