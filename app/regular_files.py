"""Read only regular files: a FIFO, socket or device named as a checkpoint must not block a worker.

Path sources are files on a shared volume that other writers control. Opening a FIFO for
reading waits for a writer, forever if none comes, and a device may never end; one such
check would hold a worker until its time limit. Sources are checked by ``stat`` when they
are submitted and again by the worker, but a writer can rename a FIFO over a file after that
check, so readers open with ``O_NONBLOCK`` (which never waits) and check the opened file with
``fstat``; ``pin_regular`` then hands the readers a path to that same opened file, so no later
open by a format reader (or by torch or safetensors) can reach a different one.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import BinaryIO

from app.errors import SourceNotRegularError

REGULAR = "a regular file"
DIRECTORY = "a directory"
_KINDS = (
    (stat.S_ISREG, REGULAR),
    (stat.S_ISDIR, DIRECTORY),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_FD_DIR = Path("/proc/self/fd")


def file_kind(path: Path) -> str | None:
    """What ``path`` is, symlinks followed (``REGULAR``, ``DIRECTORY``, ...); None if absent.

    A broken symlink or a symlink loop is None too: there is nothing to read.
    """
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    return _kind_of(mode)


def _kind_of(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


def not_regular_error(name: str, kind: str, *, role: str = "") -> SourceNotRegularError:
    """The problem for ``name`` (a file name, never a path) that is ``kind``, not a file.

    Args:
        name: The file's name as the caller knows it.
        kind: What it is instead (``file_kind``).
        role: Words after the name, e.g. ``", read with this source,"``.
    """
    return SourceNotRegularError(
        f"{name[:80]!r}{role} is {kind}, not a regular file. Only regular files are read as "
        "checkpoints (a FIFO would wait for a writer, a device may never end); name a "
        "checkpoint file or a directory of them."
    )


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading without ever waiting, and only if it is a regular file.

    Raises:
        SourceNotRegularError: ``path`` is a FIFO, socket, device or directory.
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> with open_regular(Path("model.safetensors")) as f:  # doctest: +SKIP
        ...     head = f.read(8)
    """
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a device with no driver behind it
            raise not_regular_error(path.name, "a socket or device") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular_error(path.name, _kind_of(mode))
        os.set_blocking(fd, True)  # reads of a regular file never wait anyway; clear it
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


@contextmanager
def pin_regular(path: Path) -> Iterator[Path]:
    """Open ``path`` once (``open_regular``) and yield a path that reopens that very file.

    Readers open their file several times (sniff, guards, torch.load, safe_open, spans); with
    the yielded ``/proc/self/fd/N`` every one of them reaches the regular file checked here,
    even if the name is renamed over meanwhile. The path is valid inside the ``with`` only.
    Without ``/proc`` (not Linux) ``path`` itself is yielded.

    Raises:
        SourceNotRegularError, FileNotFoundError: As for ``open_regular``.
    """
    with open_pinned(path) as (_file, pinned):
        yield pinned


@contextmanager
def open_pinned(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """``open_regular`` and ``pin_regular`` at once: the opened file and its pinned path.

    Raises:
        SourceNotRegularError, FileNotFoundError: As for ``open_regular``.
    """
    with open_regular(path) as file:
        yield file, (_FD_DIR / str(file.fileno()) if _has_fd_dir() else path)


@cache
def _has_fd_dir() -> bool:
    return _FD_DIR.is_dir()
