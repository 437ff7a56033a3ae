"""Every construct of the segment language gives the same members on a real engine as the
plain-Python reference evaluator, over the same generated data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from segment_cases import CASES, COMPUTED_TRAITS, NAMED_SEGMENTS
from segment_data import AS_OF, SegmentData, _customers_arrow, _events_arrow, load

from orbita.engine.segments.compile import compile_segment, feature_tables
from orbita.engine.segments.features import plan_features
from orbita.engine.segments.reference import evaluate
from orbita.engine.segments.tables import (
    PREDICTIONS_SCHEMA,
    RFM_CELLS_SCHEMA,
    Dialect,
    segment_tables,
)
from orbita.model.segments import Segment

# 27 February reaches 28 February in a year without 29 February: those birthdays count.
AS_OFS = [AS_OF, AS_OF - timedelta(days=2, hours=6)]
# Cases whose generated answer is legitimately everyone or no one.
TRIVIAL: set[str] = set()


def members_on(con: Any, segment: Segment, *, as_of: datetime, dialect: Dialect) -> set[int]:
    expr = compile_segment(
        segment,
        as_of=as_of,
        tables=segment_tables(dialect),
        segments=NAMED_SEGMENTS,
        computed_traits=COMPUTED_TRAITS,
    )
    assert expr.schema().names == ("customer_id",)
    rows = con.to_pyarrow(expr).column("customer_id").to_pylist()
    assert len(rows) == len(set(rows)), "members must be distinct"
    return set(rows)


def expected(data: SegmentData, segment: Segment, *, as_of: datetime) -> set[int]:
    return evaluate(
        segment,
        as_of=as_of,
        data=data.reference(),
        segments=NAMED_SEGMENTS,
        computed_traits=COMPUTED_TRAITS,
    )


@pytest.mark.parametrize("as_of", AS_OFS, ids=["mar01", "feb27"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_duckdb_members_equal_reference(
    name: str, as_of: datetime, duckdb_segments: Any, segment_data: SegmentData
) -> None:
    segment = CASES[name]
    want = expected(segment_data, segment, as_of=as_of)
    got = members_on(duckdb_segments, segment, as_of=as_of, dialect="duckdb")
    assert got == want, (
        f"{name}: only on DuckDB {sorted(got - want)[:10]}, "
        f"only in the reference {sorted(want - got)[:10]}"
    )


def test_cases_are_not_trivial(segment_data: SegmentData) -> None:
    """A case that selects no one or everyone proves little: the data must split each."""
    everyone = {row["customer_id"] for row in segment_data.customers}
    trivial = [
        name
        for name, segment in CASES.items()
        if name not in TRIVIAL and expected(segment_data, segment, as_of=AS_OF) in (set(), everyone)
    ]
    assert trivial == []


def test_birthday_on_29_february_counts_on_28th(segment_data: SegmentData) -> None:
    leap_born = {
        row["customer_id"]
        for row in segment_data.customers
        if row["traits"].get("birthday") == "1992-02-29"
    }
    assert leap_born
    birthdays = CASES["birthday_in_3d"]
    assert leap_born <= expected(segment_data, birthdays, as_of=AS_OFS[1])
    assert not leap_born & expected(segment_data, birthdays, as_of=AS_OF)


def test_events_after_as_of_do_not_count(duckdb_segments: Any) -> None:
    """Replaying history: a segment at an earlier as_of ignores what came later."""
    ordered = CASES["did_order"]
    early = AS_OF - timedelta(days=150)
    late = members_on(duckdb_segments, ordered, as_of=AS_OF, dialect="duckdb")
    before = members_on(duckdb_segments, ordered, as_of=early, dialect="duckdb")
    assert before < late


def test_as_of_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        compile_segment(CASES["did_order"], as_of=datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.postgres
def test_postgres_members_equal_reference(postgres_url: str, segment_data: SegmentData) -> None:
    con = _postgres(postgres_url)
    try:
        load(con, segment_data, json_type="jsonb")
        mismatches = {}
        for name, segment in sorted(CASES.items()):
            for as_of in AS_OFS:
                want = expected(segment_data, segment, as_of=as_of)
                got = members_on(con, segment, as_of=as_of, dialect="postgres")
                if got != want:
                    mismatches[f"{name}@{as_of:%m-%d}"] = (
                        sorted(got - want)[:5],
                        sorted(want - got)[:5],
                    )
        assert mismatches == {}, "(only on PostgreSQL, only in the reference)"
    finally:
        con.disconnect()


def _postgres(url: str) -> Any:
    from urllib.parse import urlparse

    parts = urlparse(url)
    return ibis.postgres.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        database=parts.path.lstrip("/"),
    )


# Not ours: pyspark 4.0 converting results through pandas 3, and py4j's sockets.
SPARK_WARNINGS = (
    "ignore:The copy keyword is deprecated",
    "ignore:unclosed <socket.socket:ResourceWarning",
)


@pytest.fixture(scope="session")
def spark_segments(
    segment_data: SegmentData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A local Spark (one core, JVM started once) holding the seeded tables as temp views,
    JSON as text, behind an Ibis connection."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reason = "Spark local mode needs Java (17): no `java` on PATH and no JAVA_HOME"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("orbita-segment-tests")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        tables = {
            "events": _events_arrow(segment_data),
            "customers": _customers_arrow(segment_data),
            "rfm_cells": pa.Table.from_pylist(
                segment_data.rfm_cells, schema=pa.schema(_arrow_fields(RFM_CELLS_SCHEMA))
            ),
            "predictions": pa.Table.from_pylist(
                segment_data.predictions, schema=pa.schema(_arrow_fields(PREDICTIONS_SCHEMA))
            ),
        }
        for name, table in tables.items():
            session.createDataFrame(table).createOrReplaceTempView(name)
        yield ibis.pyspark.connect(session)
    finally:
        session.stop()


def _arrow_fields(schema: dict[str, str]) -> list[tuple[str, pa.DataType]]:
    types = {"int64": pa.int64(), "string": pa.string(), "float64": pa.float64()}
    return [(column, types[kind]) for column, kind in schema.items()]


@pytest.mark.filterwarnings(*SPARK_WARNINGS)
def test_spark_holds_the_seeded_tables_as_loaded(
    spark_segments: Any, segment_data: SegmentData
) -> None:
    """Nulls stay nulls and instants stay the same instants on the way into Spark."""
    session = spark_segments._session
    for name, table in (
        ("events", _events_arrow(segment_data)),
        ("customers", _customers_arrow(segment_data)),
    ):
        counts = ", ".join(f"count(`{column}`)" for column in table.column_names)
        row = session.sql(f"SELECT {counts} FROM {name}").first()
        assert row is not None
        assert list(row) == [len(column) - column.null_count for column in table.columns]
    first = session.sql("SELECT unix_micros(min(timestamp)) FROM events").first()
    assert first is not None
    earliest = min(event["timestamp"] for event in segment_data.events)
    assert first[0] == int(earliest.timestamp() * 1_000_000)


@pytest.mark.filterwarnings(*SPARK_WARNINGS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_pyspark_local_mode_members_equal_reference(
    name: str, spark_segments: Any, segment_data: SegmentData
) -> None:
    """Every case on Spark local mode, at one as_of, against the reference evaluator.

    The seeded data holds numbers written as JSON text ("150") in `price` and `revenue`:
    they must not count as numbers on Spark either (SparkJson reads them with a typed
    from_json)."""
    segment = CASES[name]
    want = expected(segment_data, segment, as_of=AS_OF)
    got = members_on(spark_segments, segment, as_of=AS_OF, dialect="pyspark")
    assert got == want, (
        f"{name}: only on Spark {sorted(got - want)[:10]}, "
        f"only in the reference {sorted(want - got)[:10]}"
    )


def members_with_features(con: Any, *, as_of: datetime, dialect: Dialect) -> dict[str, set[int]]:
    """Every case compiled over per-customer feature tables (features.py), materialised in
    the engine first, as a refresh does."""
    plan = plan_features([segment.condition for segment in CASES.values()], segments=NAMED_SEGMENTS)
    assert len(plan.columns) > 10, "the cases must exercise the feature tables"
    for table, expr in feature_tables(plan, as_of=as_of, tables=segment_tables(dialect)).items():
        con.create_table(table, con.to_pyarrow(expr), overwrite=True)
    found = {}
    for name, segment in CASES.items():
        expr = compile_segment(
            segment,
            as_of=as_of,
            tables=segment_tables(dialect),
            segments=NAMED_SEGMENTS,
            computed_traits=COMPUTED_TRAITS,
            features=plan,
        )
        rows = con.to_pyarrow(expr).column("customer_id").to_pylist()
        assert len(rows) == len(set(rows)), f"{name}: members must be distinct"
        found[name] = set(rows)
    return found


def _feature_mismatches(con: Any, data: SegmentData, dialect: Dialect) -> dict[str, Any]:
    mismatches = {}
    for as_of in AS_OFS:
        for name, got in members_with_features(con, as_of=as_of, dialect=dialect).items():
            want = expected(data, CASES[name], as_of=as_of)
            if got != want:
                mismatches[f"{name}@{as_of:%m-%d}"] = (
                    sorted(got - want)[:5],
                    sorted(want - got)[:5],
                )
    return mismatches


def test_duckdb_members_over_feature_tables_equal_reference(
    duckdb_segments: Any, segment_data: SegmentData
) -> None:
    assert _feature_mismatches(duckdb_segments, segment_data, "duckdb") == {}


@pytest.mark.postgres
def test_postgres_members_over_feature_tables_equal_reference(
    postgres_url: str, segment_data: SegmentData
) -> None:
    con = _postgres(postgres_url)
    try:
        load(con, segment_data, json_type="jsonb")
        assert _feature_mismatches(con, segment_data, "postgres") == {}
    finally:
        con.disconnect()
