"""`serve`: a real process, its server.json, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orbita.api.server import bind, url_of
from orbita.core.errors import StoreLockedError, UserError
from orbita.core.settings import Settings
from orbita.services.workspace import init_workspace, open_workspace

SERVE = """
import sys
from pathlib import Path
from orbita.api.server import serve
from orbita.core.settings import Settings
serve(settings=Settings(workspace=Path(sys.argv[1])), host="127.0.0.1", port=0,
      ready=lambda url: print("ready", url, flush=True))
"""


def test_serve_writes_server_json_and_stops_cleanly(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    keys = init_workspace(settings=settings)
    info_path = settings.workspace / "server.json"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(settings.workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until `ready` runs (or the process dies)
        assert line.startswith("ready http://127.0.0.1:"), (
            process.stderr.read() if process.stderr else ""
        )
        url = line.split()[1]
        info = json.loads(info_path.read_text())
        assert info == {"url": url, "pid": process.pid}
        with httpx.Client(base_url=url, auth=(keys.write_key, "")) as http:
            assert http.get("/healthz").status_code == 200
            assert http.post("/v1/track", json={"userId": "u1", "event": "A"}).status_code == 200
        # The server owns the embedded store: another process gets a clear error.
        with pytest.raises(StoreLockedError):
            open_workspace(settings=settings)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not info_path.exists()
    with open_workspace(settings=settings) as workspace:
        assert workspace.events.count() == 1  # answered 200 means stored


def test_serve_needs_an_initialised_workspace(tmp_path: Path) -> None:
    from orbita.api.server import serve

    with pytest.raises(UserError, match="no workspace"):
        serve(settings=Settings(workspace=tmp_path / "none"), host="127.0.0.1", port=0)


def test_bind_reports_a_busy_port() -> None:
    taken = bind(host="127.0.0.1", port=0)
    taken.listen()
    try:
        port = int(url_of(taken).rsplit(":", 1)[1])
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind(host="127.0.0.1", port=port)
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "http://127.0.0.1:"), ("0.0.0.0", "http://127.0.0.1:")],
)
def test_url_of(host: str, expected: str) -> None:
    sock = bind(host=host, port=0)
    try:
        assert url_of(sock).startswith(expected)
    finally:
        sock.close()
