"""Atomic file writes: a temp file beside the target, moved into place only when complete.

Readers of a report or a merged file see it absent or whole, never half written, and a
failed write leaves no temp file behind. A full disk is the caller's 507 problem, not a 500.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from app.errors import InsufficientStorageError


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` when the block ends without an error.

    Raises:
        InsufficientStorageError: The disk (or the quota) is full; nothing was kept.

    Example:
        >>> with atomic_file(Path("report.json")) as out:  # doctest: +SKIP
        ...     out.write(b"{}")
    """
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as out:
            yield out
        tmp.replace(path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorageError(
                "The server ran out of disk space while writing the check's results. "
                "Nothing was kept; try again later."
            ) from None
        raise
