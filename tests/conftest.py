"""Shared fixtures: workspaces on the embedded default and on PostgreSQL.

PostgreSQL tests use the server named by ORBITA_TEST_POSTGRES_URL (default: the local one).
When it does not answer they are skipped with the reason — except under CI=true, where a
missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from orbita.core.settings import Settings
from orbita.services.workspace import Workspace, init_workspace, open_workspace

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _admin_url() -> str:
    return os.environ.get("ORBITA_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a PostgreSQL server that answers (or skip / fail as above)."""
    url = _admin_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL at {url} does not answer: {str(error).strip().splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"orbita_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_settings(tmp_path: Path, *, postgres_url: str | None = None) -> Settings:
    return Settings(
        workspace=tmp_path / "workspace",
        database_url=postgres_url,
        events_url=postgres_url,
    )


@pytest.fixture
def embedded_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """SQLite (WAL) state and DuckDB events: the embedded default."""
    settings = make_settings(tmp_path)
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as workspace:
        yield workspace


@pytest.fixture
def postgres_workspace(tmp_path: Path, postgres_url: str) -> Iterator[Workspace]:
    """State and events both in PostgreSQL."""
    settings = make_settings(tmp_path, postgres_url=postgres_url)
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as workspace:
        yield workspace


@pytest.fixture(params=["embedded", "postgres"])
def workspace(request: pytest.FixtureRequest) -> Workspace:
    """Each test that takes `workspace` runs on both backends."""
    fixture_name = f"{request.param}_workspace"
    result: Workspace = request.getfixturevalue(fixture_name)
    return result
