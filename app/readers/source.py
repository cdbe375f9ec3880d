"""What a reader reads: a seekable binary file, plus a local path to it when there is one.

Readers take a ``ByteSource``, never a bare path they assume is local: a path source and an
upload are files on this machine today, and an object in storage will be a file object
first (``Storage.get_local_path`` gives it a path where a library needs one, as fvcore's
``PathManager.get_local_path`` does). A reader reads what it can through ``file`` (format
heads, headers, zip directories) and asks for ``local_path()`` only where a library opens the
file itself (``torch.load`` with ``mmap``, safetensors' ``safe_open``, kernel copies).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import InternalError
from app.regular_files import open_pinned

HEAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class ByteSource:
    """The bytes of one checkpoint file.

    Attributes:
        file: A seekable binary file opened for reading (readers seek it as they need).
        path: A local path that reaches these very bytes, or None when there is none.
        name: The file's name as the caller knows it, for messages (never a full path).
    """

    file: BinaryIO
    path: Path | None = None
    name: str = ""

    def size(self) -> int:
        """The file's size in bytes."""
        try:
            return os.fstat(self.file.fileno()).st_size
        except (AttributeError, OSError, ValueError):  # not a real file (BytesIO)
            position = self.file.tell()
            try:
                return self.file.seek(0, os.SEEK_END)
            finally:
                self.file.seek(position)

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset`` (fewer at the end of the file)."""
        self.file.seek(offset)
        return self.file.read(count)

    def local_path(self) -> Path:
        """The local path, for libraries that open the file themselves.

        Raises:
            InternalError: The source has no local path (storage must provide one first).
        """
        if self.path is None:
            raise InternalError(
                f"The checkpoint {self.name[:80]!r} has no local file for a reader that needs one."
            )
        return self.path


@dataclass(frozen=True, slots=True)
class Head:
    """What ``Reader.matches`` looks at: the leading bytes and the size of a source.

    Attributes:
        data: The first ``HEAD_BYTES`` bytes (fewer for a shorter file).
        size: The file's size in bytes.
        source: The source itself, for a format whose identity lies further in (a zip's
            directory is at its end); most formats decide from ``data`` and ``size``.
    """

    data: bytes
    size: int
    source: ByteSource


def read_head(source: ByteSource) -> Head:
    """The ``Head`` of ``source``."""
    return Head(source.read_at(0, HEAD_BYTES), source.size(), source)


@contextmanager
def open_source(path: Path) -> Iterator[ByteSource]:
    """Open a local file as a ``ByteSource`` whose path reaches that very opened file.

    The file is opened once, without waiting and only if it is regular
    (``app.regular_files.open_pinned``): every later open by a reader, or by torch or
    safetensors, reaches the same file even if a FIFO is renamed over the name meanwhile.

    Raises:
        SourceNotRegularError: ``path`` is a FIFO, socket, device or directory.
        FileNotFoundError: ``path`` does not exist.
    """
    with open_pinned(path) as (file, pinned):
        yield ByteSource(file, pinned, path.name)


@contextmanager
def as_source(source: ByteSource | Path) -> Iterator[ByteSource]:
    """``source`` itself, or a path opened with ``open_source`` for the ``with``."""
    if isinstance(source, ByteSource):
        yield source
        return
    with open_source(source) as opened:
        yield opened
