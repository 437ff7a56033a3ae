"""A local stand-in for HTTP providers (SMS, push, Telegram, webhooks): a server on 127.0.0.1
that accepts every POST, counts it per path, and answers the way the providers' APIs do
(`sid` for SMS, `name` for push, `ok` for Telegram), so the demo delivers every channel
without sending anything anywhere."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orbita.channels.email.sink import free_port


class HttpSink:
    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.posts: Counter[str] = Counter()
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with sink._lock:
                    sink.posts[self.path.split("?")[0]] += 1
                answer = {"sid": f"SM{uuid.uuid4().hex}", "name": f"messages/{uuid.uuid4()}"}
                body = json.dumps({**answer, "ok": True, "result": {"message_id": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the demo prints its own summary

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> int:
        with self._lock:
            return sum(self.posts.values())

    def start(self) -> HttpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
