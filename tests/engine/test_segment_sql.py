"""The SQL segments print for ClickHouse and Spark, checked against snapshot files, and the
rules every printed query keeps (no wall clock, one column, every engine prints).

Regenerate the snapshots after an intended change with
    ORBITA_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/engine/test_segment_sql.py
and review the diff of tests/engine/snapshots/ before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from segment_cases import CASES, COMPUTED_TRAITS, NAMED_SEGMENTS
from segment_data import AS_OF

from orbita.engine.segments.compile import compile_many, compile_segment, to_sql
from orbita.engine.segments.tables import DIALECTS, Dialect, segment_tables
from orbita.model.segments import Segment

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("ORBITA_UPDATE_SNAPSHOTS") == "1"
SNAPSHOT_DIALECTS: tuple[Dialect, ...] = ("clickhouse", "pyspark")
# The strategy sketch's segments, and one of each kind of scan the compiler writes.
SNAPSHOT_CASES = [
    "ref_lapsed",
    "ref_shoe_browsers",
    "abandoned_cart_4h",
    "revenue_over_500",
    "viewed_expensive",
    "first_order_shoes",
    "birthday_in_3d",
    "loves_shoes",
    "zero_orders",
    "any_of",
    "champions",
]


def _sql(segment: Segment, dialect: Dialect) -> str:
    expr = compile_segment(
        segment,
        as_of=AS_OF,
        tables=segment_tables(dialect),
        segments=NAMED_SEGMENTS,
        computed_traits=COMPUTED_TRAITS,
    )
    return to_sql(expr, dialect=dialect).strip() + "\n"


@pytest.mark.parametrize("dialect", SNAPSHOT_DIALECTS)
@pytest.mark.parametrize("name", SNAPSHOT_CASES)
def test_sql_matches_snapshot(name: str, dialect: Dialect) -> None:
    path = SNAPSHOTS / f"{name}.{dialect}.sql"
    sql = _sql(CASES[name], dialect)
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(sql)
        return
    assert path.exists(), (
        f"no snapshot {path.name}: run ORBITA_UPDATE_SNAPSHOTS=1 pytest {__file__}"
    )
    assert sql == path.read_text(), (
        f"the {dialect} SQL of {name} changed; if intended, regenerate with "
        f"ORBITA_UPDATE_SNAPSHOTS=1 pytest {__file__} and review the diff"
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_case_prints_without_the_wall_clock(dialect: Dialect) -> None:
    for name, segment in CASES.items():
        sql = _sql(segment, dialect).upper()
        for clock in ("NOW()", "CURRENT_TIMESTAMP", "CURRENT_DATE", "GETDATE", "TODAY()"):
            assert clock not in sql, f"{name} on {dialect} reads the wall clock ({clock})"


def test_compile_many_gives_one_column_per_segment() -> None:
    expressions = compile_many(NAMED_SEGMENTS, as_of=AS_OF, computed_traits=COMPUTED_TRAITS)
    assert set(expressions) == set(NAMED_SEGMENTS)
    for expr in expressions.values():
        assert expr.schema().names == ("customer_id",)


def test_unknown_reference_and_cycle_fail_at_compile_time() -> None:
    from orbita.core.errors import UserError
    from orbita.model.segments import parse_segment

    loop = {
        "a": parse_segment({"all": [{"segment": "b"}]}),
        "b": parse_segment({"any": [{"segment": "a"}, {"trait": "plan", "eq": "pro"}]}),
    }
    with pytest.raises(UserError, match="cycle: a -> b -> a"):
        compile_segment(loop["a"], as_of=AS_OF, segments=loop, name="a")
    with pytest.raises(UserError, match="unknown segment 'nope'"):
        compile_segment(parse_segment({"segment": "nope"}), as_of=AS_OF, segments=loop)


def test_resolver_reads_materialised_members() -> None:
    """A resolved reference reads the given table; an unresolved one (None) is inlined."""
    import ibis

    materialised = ibis.table({"customer_id": "int64"}, name="members_lapsed_30d")
    expr = compile_segment(
        NAMED_SEGMENTS["lapsed_big_spenders"],
        as_of=AS_OF,
        resolve=lambda name: materialised if name == "lapsed_30d" else None,
        segments=NAMED_SEGMENTS,
    )
    sql = to_sql(expr, dialect="duckdb")
    assert "members_lapsed_30d" in sql
    assert "SUM(" in sql  # big_spenders, inlined


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"trait": "created_at", "eq": "yesterday"}, "'created_at' holds a date"),
        ({"trait": "email", "gt": 3}, "'email' holds a text: it cannot be compared with a number"),
        ({"predicted": "ltv", "eq": "high"}, "'ltv' holds a number"),
        ({"computed": "nope", "gt": 3}, "unknown computed trait 'nope'"),
    ],
)
def test_type_errors_on_typed_columns(spec: dict[str, object], message: str) -> None:
    from orbita.core.errors import UserError
    from orbita.model.segments import parse_segment

    with pytest.raises(UserError, match=message):
        compile_segment(parse_segment(spec), as_of=AS_OF, computed_traits=COMPUTED_TRAITS)
