"""A stand-in for the ``os`` module of ``app.storage.direct_file``: a disk that fills up.

Patch it in with ``monkeypatch.setattr(direct_file, "os", FullDisk(after=...))``; only the
upload's file sees it, never the event loop or the rest of the process.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class FullDisk:
    """``os`` whose ``write`` fails with ENOSPC once ``after`` bytes are written."""

    def __init__(self, after: int = 0) -> None:
        self.after = after
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.written += len(data)
        if self.written > self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


class DevFullFiles:
    """A stand-in for the ``os`` module of ``app.atomic``: every file it opens is /dev/full.

    Patch it in with ``monkeypatch.setattr(atomic, "os", DevFullFiles())``: the temp file is
    still created (and must be removed), but every write to it fails with ENOSPC, from the
    kernel itself, whether Python writes it or the kernel copies into it.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, mode: str) -> Any:
        os.close(fd)
        return open("/dev/full", mode)  # the caller closes it, as it closes os.fdopen's
