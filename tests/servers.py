"""Real servers for tests: redis-server and PostgreSQL on free loopback ports.

Each starts from the Debian packages (``.ci/run`` installs them when missing) in a temporary
directory and is stopped at the end. Where a binary is missing, a test that needs it is
skipped on a developer's machine and fails in CI (``CI=true``): a server test never skips
there.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _require(binary: str | None, what: str) -> str:
    if binary:
        return binary
    message = f"{what} is not installed (bash .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RedisServer:
    """A running redis-server; ``restart()`` loses what it held (no persistence)."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = _require(shutil.which("redis-server"), "redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        server = RedisServer(free_port(), Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own (trust auth on loopback), run as ``postgres`` if root."""

    port: int
    directory: Path

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = list(args)
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=120)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def init(self) -> None:
        initdb = _require(_pg_binary("initdb"), "PostgreSQL (initdb)")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run(initdb, "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        pg_ctl = _require(_pg_binary("pg_ctl"), "PostgreSQL (pg_ctl)")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.directory / "log"),
            "start",
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        pg_ctl = _pg_binary("pg_ctl")
        if pg_ctl:
            self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def new_database(self) -> str:
        """Create an empty database; returns its SQLAlchemy URL (psycopg 3)."""
        name = "test_" + secrets.token_hex(6)
        import psycopg

        with psycopg.connect(self.url_for("postgres", driver=False), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def url_for(self, database: str, *, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="pg-"))
    server = PostgresServer(free_port(), directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


ROOT = Path(__file__).parents[1]


def start_cli(
    arguments: list[str], env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m app.cli ARGUMENTS`` in its own process group (its children stop with it);
    output to ``log`` (appended) or inherited."""
    import sys

    out = log.open("ab") if log is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *arguments],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """SIGTERM the process group, SIGKILL it if it outlives ``timeout``."""
    import signal

    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until_ready(
    base: str, process: subprocess.Popen[bytes] | None = None, *, timeout: float = 120.0
) -> None:
    """Until ``base/readyz`` answers 200; fails early when ``process`` exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise AssertionError(f"{base} did not become ready")
        time.sleep(0.3)


@contextlib.contextmanager
def serving(
    arguments: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[str]:
    """``ckpt-compat serve`` on a free loopback port, ready; yields its base URL."""
    port = free_port()
    process = start_cli(["serve", "--port", str(port), *arguments], env or {**os.environ}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield base
    finally:
        stop_process(process)
