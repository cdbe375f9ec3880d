"""Fail fast against a real ``ckpt-compat serve``: a bad field or file head is answered while
a large body is still being sent slowly, and nothing of the upload is kept."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

_BOUNDARY = "ckptcompatboundary"
_DECLARED = 2 * 1024**3  # a 2 GiB body is announced; a few KiB are ever sent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    port, data_dir = free_port(), tmp_path_factory.mktemp("fail-fast-data")
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    command += ["--data-dir", str(data_dir), "--log-level", "warning"]
    env = {**os.environ, "CKPT_COMPAT_MAX_UPLOAD_BYTES": str(4 * 1024**3)}
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server not ready"
            time.sleep(0.3)
        yield "127.0.0.1", port, data_dir
    finally:
        process.terminate()
        process.wait(timeout=30)


def _field(name: str, value: str) -> bytes:
    return (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _file_start() -> bytes:
    return (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.pt"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _stream_slowly(
    address: tuple[str, int], fields: bytes, first: bytes
) -> tuple[dict[str, object], int, float]:
    """Send the fields and the file's start, then 4 KiB every 50 ms until an answer comes.

    Returns the problem, the bytes sent, and the seconds until the answer.
    """
    head = (
        f"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Length: {_DECLARED}\r\n"
        f"Content-Type: multipart/form-data; boundary={_BOUNDARY}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(head + fields + _file_start() + first)
        sent, received = len(fields) + len(first), b""
        sock.settimeout(0.05)
        while b"\r\n\r\n" not in received or not _complete(received):
            assert time.monotonic() - started < 20, "no answer while the body streamed"
            try:
                chunk = sock.recv(65536)
                received += chunk
                if not chunk:
                    break
            except TimeoutError:
                try:
                    sock.sendall(b"\0" * 4096)
                    sent += 4096
                except OSError:  # the server closed its side after answering
                    pass
    elapsed = time.monotonic() - started
    status = int(received.split(b" ", 2)[1])
    problem: dict[str, object] = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert problem["status"] == status
    return problem, sent, elapsed


def _complete(received: bytes) -> bool:
    headers, _, body = received.partition(b"\r\n\r\n")
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _kept_files(data_dir: Path) -> list[Path]:
    """Files that could hold upload bytes (the database and its journal aside)."""
    return [
        p
        for p in data_dir.rglob("*")
        if p.is_file()
        and (p.name.startswith("upload-") or p.stat().st_size > 0)
        and ".db" not in p.name
        and "lock" not in p.name
    ]


@pytest.mark.parametrize(
    ("fields", "first", "slug"),
    [
        (_field("architecture", "torchvision:no_such_net"), b"\0" * 64, "architecture-not-found"),
        (
            _field("architecture", "torchvision:resnet18")
            + _field("options", json.dumps({"architecture_kwargs": {"pretrained": True}})),
            b"\0" * 64,
            "invalid-architecture-arguments",
        ),
        (_field("options", "{not json"), b"\0" * 64, "invalid-options"),
        (
            _field("architecture", "torchvision:resnet18"),
            b"epoch,loss\n" * 500,
            "unsupported-format",
        ),
        (
            _field("architecture", "torchvision:resnet18"),
            b"PK\x03\x04" + bytes(22) + (14).to_bytes(2, "little") + bytes(2) + b"archive/data/0",
            "unsupported-format",
        ),
    ],
    ids=["unknown-architecture", "pretrained", "bad-options", "text-file", "torchscript"],
)
def test_fail_fast_answers_before_the_body_ends(
    server: tuple[str, int, Path], fields: bytes, first: bytes, slug: str
) -> None:
    host, port, data_dir = server
    problem, sent, elapsed = _stream_slowly((host, port), fields, first)
    assert problem["type"] == f"/problems/{slug}", problem
    assert sent < 2 * 1024 * 1024 < _DECLARED  # answered long before the body would end
    assert elapsed < 10
    time.sleep(0.5)  # the aborted upload is removed off the event loop
    assert _kept_files(data_dir) == []
