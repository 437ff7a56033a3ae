"""A real uvicorn serving the real app on a free loopback port, in a thread.

Nothing of Orbita's is replaced: the app from create_app, and uvicorn configured as
`orbita serve` configures it (uvloop, httptools). Imported by tests as `live_api` (not
through `conftest`, a module name every test folder shares).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from orbita.api.server import bind, server_config, url_of
from orbita.services.workspace import Keys, Workspace

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
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


StartServer = Callable[..., LiveServer]
