"""A real uvicorn serving the real app on a free loopback port, in a thread, per test.

Nothing of Orbita's is replaced: a fresh workspace (init_workspace + open_workspace), the app
from create_app, and uvicorn configured as `orbita serve` configures it (uvloop, httptools).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from orbita.api.app import create_app
from orbita.api.server import bind, server_config, url_of
from orbita.core.clock import Clock, SimulatedClock
from orbita.core.settings import Settings
from orbita.services.workspace import Keys, Workspace, init_workspace, open_workspace

# A fixed "now" for tests that check the server's clock (received_at, skew correction).
SERVER_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class LiveServer:
    url: str
    keys: Keys
    workspace: Workspace
    app: FastAPI

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def writer(self) -> httpx.Client:
        """Authenticated as Segment's clients do: HTTP Basic, write key, empty password."""
        return self.client(auth=(self.keys.write_key, ""))

    def admin(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.keys.admin_key}"})

    def count(self) -> int:
        """Every stored event of the workspace, read straight from the event store."""
        return self.workspace.events.count()


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve `app` under uvicorn in a thread until the block ends; yields its URL."""
    sock = bind(host="127.0.0.1", port=0)
    server = uvicorn.Server(server_config(app, configure_logging=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


StartServer = Callable[..., LiveServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start a server on a fresh workspace: `start_server(clock=…, postgres_url=…)`."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(*, clock: Clock | None = None, postgres_url: str | None = None) -> LiveServer:
            settings = Settings(
                workspace=tmp_path / f"workspace-{next(numbers)}",
                database_url=postgres_url,
                events_url=postgres_url,
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
