"""A real HTTP receiver on loopback that verifies Standard Webhooks signatures.

Runs ``http.server`` in a thread; answers ``fail_first`` requests with 503 (then 204), or a
redirect when ``redirect_to`` is set, and keeps every verified body.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Receiver:
    """What the receiver saw: verified bodies, every request's headers, and its answers."""

    port: int
    fail_first: int = 0
    redirect_to: str | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ckpt"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            receiver.requests += 1
            receiver.headers.append(dict(self.headers.items()))
            if receiver.redirect_to is not None:
                self.send_response(307)
                self.send_header("location", receiver.redirect_to)
                self.end_headers()
                return
            if receiver.requests <= receiver.fail_first:
                self.send_response(503)
                self.end_headers()
                return
            try:
                payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
            except Exception:
                receiver.rejected += 1
                self.send_response(401)
                self.end_headers()
                return
            receiver.bodies.append(json.loads(json.dumps(payload)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


@contextlib.contextmanager
def running_receiver(
    port: int | None = None, *, fail_first: int = 0, redirect_to: str | None = None
) -> Iterator[Receiver]:
    """A receiver on ``127.0.0.1:port`` (a free port by default) until the block ends."""
    receiver = Receiver(port or 0, fail_first=fail_first, redirect_to=redirect_to)
    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
