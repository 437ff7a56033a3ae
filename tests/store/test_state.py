"""The state schema: Alembic migrations create exactly what the tables describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from orbita.core.settings import normalise_postgres_url
from orbita.store.state import create_state_engine, metadata, migrate


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite3'}"
    return normalise_postgres_url(request.getfixturevalue("postgres_url"))


def test_migrations_match_the_tables_and_run_twice(state_url: str) -> None:
    engine = create_state_engine(state_url)
    try:
        migrate(engine)
        migrate(engine)  # a second start changes nothing
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
            assert differences == []
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert [version] == _heads()
    finally:
        engine.dispose()


def _heads() -> list[str]:
    """The migrations' heads: exactly one, or two migrations were written on one parent."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import orbita.store.state as state

    config = Config()
    config.set_main_option("script_location", str(Path(state.__file__).parent / "migrations"))
    return list(ScriptDirectory.from_config(config).get_heads())


def test_migrations_have_one_head() -> None:
    assert len(_heads()) == 1


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_state_engine(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
