"""Every construct of the segment language gives the same members on a real engine as the
plain-Python reference evaluator, over the same generated data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import ibis
import pytest
from segment_cases import CASES, COMPUTED_TRAITS, NAMED_SEGMENTS
from segment_data import AS_OF, SegmentData, load

from orbita.engine.segments.compile import compile_segment
from orbita.engine.segments.reference import evaluate
from orbita.engine.segments.tables import Dialect, segment_tables
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


def test_pyspark_local_mode_members_equal_reference() -> None:
    """Wanted: a representative segment on Spark local mode (Java 17 is installed)."""
    pytest.importorskip(
        "pyspark", reason="pyspark is not installed (a heavy dependency: ask first)"
    )
    pytest.fail("write this test once pyspark is a dev dependency")
