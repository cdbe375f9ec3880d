"""Locks that hold across API processes: PostgreSQL advisory locks, or lock files for SQLite.

Several API processes share one database: recording a check against an upload, deleting an
upload and the expiry sweep must not interleave between them, and the reaper must run in one
process at a time. The database is the authority, so the locks live there (PostgreSQL), or
beside its file (SQLite: ``fcntl`` locks, which every process on the machine sees).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine, text


def _key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _lock_file(engine: Engine, name: str) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(f"{database}.{name}.lock")


class SharedLock:
    """A blocking lock named ``name``, exclusive across threads and processes.

    Example:
        >>> uploads = SharedLock(engine, "uploads")  # doctest: +SKIP
        >>> with uploads:  # doctest: +SKIP
        ...     record_the_check()
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._local = threading.Lock()
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> SharedLock:
        self._local.acquire()
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(_hold(self._engine, self._name, blocking=True))
        except BaseException:
            self._local.release()
            raise
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            self._local.release()


@contextlib.contextmanager
def try_exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Hold ``name`` if nobody does (yields True), else yield False at once."""
    with _hold(engine, name, blocking=False) as held:
        yield held


@contextlib.contextmanager
def _hold(engine: Engine, name: str, *, blocking: bool) -> Iterator[bool]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            query = "SELECT pg_advisory_lock(:k)" if blocking else "SELECT pg_try_advisory_lock(:k)"
            got = connection.execute(text(query), {"k": _key(name)}).scalar()
            held = True if blocking else bool(got)
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
                connection.commit()
        return
    path = _lock_file(engine, name)
    if path is None:
        yield True
        return
    with path.open("a") as handle:
        flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
