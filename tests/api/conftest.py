"""Fixtures: a fresh workspace (init_workspace + open_workspace) served by a real uvicorn."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from live_api import SERVER_NOW, LiveServer, StartServer, running

from orbita.api.app import create_app
from orbita.core.clock import Clock, SimulatedClock
from orbita.core.settings import Settings
from orbita.services.workspace import init_workspace, open_workspace


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start a server on a fresh workspace: `start_server(clock=…, postgres_url=…)`."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(
            *,
            clock: Clock | None = None,
            postgres_url: str | None = None,
            parse_workers: int = 0,
        ) -> LiveServer:
            # Bodies are prepared in-process unless a test asks for the worker processes
            # `orbita serve` uses (spawning them costs each server a second).
            settings = Settings(
                workspace=tmp_path / f"workspace-{next(numbers)}",
                database_url=postgres_url,
                events_url=postgres_url,
                parse_workers=parse_workers,
            )
            keys = init_workspace(settings=settings)
            workspace = stack.enter_context(open_workspace(settings=settings, clock=clock))
            app = create_app(settings=settings, workspace=workspace)
            url = stack.enter_context(running(app))
            return LiveServer(url=url, keys=keys, workspace=workspace, app=app)

        yield start


@pytest.fixture
def server(start_server: StartServer) -> LiveServer:
    """The embedded default store (SQLite + DuckDB) and the wall clock."""
    return start_server()


@pytest.fixture
def clocked_server(start_server: StartServer) -> LiveServer:
    """The embedded store under a simulated clock standing at SERVER_NOW."""
    return start_server(clock=SimulatedClock(SERVER_NOW))
