"""Fixtures for segment tests: the generated data, and a DuckDB holding it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ibis
import pytest
from segment_data import SegmentData, generate, load


@pytest.fixture(scope="session")
def segment_data() -> SegmentData:
    return generate()


@pytest.fixture(scope="module")
def duckdb_segments(segment_data: SegmentData) -> Iterator[Any]:
    con = ibis.duckdb.connect()
    load(con, segment_data, json_type="JSON")
    yield con
    con.disconnect()
