"""A loopback HTTP proxy in front of the S3 server that fails chosen requests, or goes away.

moto's server has no fault injection, and stopping it loses what it holds (it keeps objects
in memory), so a test that needs the store to fail mid-way and come back puts this proxy
between the service and moto: requests pass through unchanged (the Host header the client
signed included) unless ``rule(method, target)`` answers a status, which is sent as an S3
error document instead, or ``DROP``, which closes the connection without an answer and stops
listening, as a store that went away. ``start`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers import free_port, wait_for_port

DROP = -1
Rule = Callable[[str, str], int | None]
"""``rule(method, target)``: a status to answer instead, ``DROP``, or None to pass."""

_HOP = {"connection", "transfer-encoding", "expect", "keep-alive"}
_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>injected by the test proxy</Message></Error>"
)


class FaultProxy:
    """The proxy; ``endpoint`` is what the service's ``AWS_ENDPOINT_URL`` names."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.rule: Rule | None = None
        self.failed: list[tuple[str, str, int]] = []  # (method, target, status) answered by us
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop listening and cut every open connection (kept-alive ones too)."""
        with self._lock:
            server, self._server = self._server, None
            connections, self._connections = self._connections, set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @contextmanager
    def failing(self, rule: Rule) -> Iterator[None]:
        """Apply ``rule`` for the ``with``; the store is reachable again after it."""
        self.rule = rule
        try:
            yield
        finally:
            self.rule = None
            if not self.up:
                self.start()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember an open connection (``stop`` cuts it), or forget a closed one."""
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: connections cut by ``stop`` fail their writes, as intended."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self._proxy().track(self.connection, add=True)

    def finish(self) -> None:
        self._proxy().track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the S3 server's own log lists the requests."""

    def _proxy(self) -> FaultProxy:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        return proxy

    def _relay(self) -> None:
        body = self._read_body()
        proxy = self._proxy()
        action = proxy.rule(self.command, self.path) if proxy.rule is not None else None
        if action == DROP:
            proxy.failed.append((self.command, self.path, DROP))
            self.close_connection = True
            threading.Thread(target=proxy.stop, daemon=True).start()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action is not None:
            proxy.failed.append((self.command, self.path, action))
            code = "ServiceUnavailable" if action == 503 else "InternalError"
            self._answer(action, [("Content-Type", "application/xml")], _ERROR.format(code=code))
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body:
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP]
            self._answer(answer.status, kept, data, length=answer.getheader("Content-Length"))
        finally:
            upstream.close()

    def _answer(
        self,
        status: int,
        headers: list[tuple[str, str]],
        data: bytes | str,
        *,
        length: str | None = None,
    ) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        # A HEAD answer says the object's length and sends no body.
        head = self.command == "HEAD" and length
        self.send_header("Content-Length", length if head else str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # http.server dispatches on these names.
    def do_GET(self) -> None:
        self._relay()

    def do_HEAD(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_DELETE(self) -> None:
        self._relay()


@contextmanager
def fault_proxy(upstream_endpoint: str) -> Iterator[FaultProxy]:
    """A started proxy in front of ``upstream_endpoint`` (``http://127.0.0.1:<port>``)."""
    proxy = FaultProxy(int(upstream_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
