"""A seekable, read-only file object over ranged reads, which counts what it fetched.

Readers take a seekable binary file (``app.readers.source.ByteSource``); an object in S3 has
no file, only ranged GETs. ``RangeFile`` turns one into the other: every ``read`` becomes a
ranged read of at least ``read_ahead`` bytes (a zip directory or a pickle is read in many
small pieces; one request per piece would be slow), kept in a small cache of recent windows,
and ``bytes_read`` says what crossed the network, so a report can state it.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

ReadRange = Callable[[int, int], bytes]
"""``read_range(start, length)``: up to ``length`` bytes from ``start``."""

READ_AHEAD = 64 * 1024
WINDOWS = 8  # windows kept: a zip reader goes back and forth between a few places
COALESCE_GAP = 64 * 1024  # ranges closer than this are fetched as one
FETCH_THREADS = 8


class RangeFile(io.RawIOBase):
    """A read-only file of ``size`` bytes whose reads are ranged reads.

    Example:
        >>> data = bytes(range(256)) * 4
        >>> f = RangeFile(lambda s, n: data[s : s + n], len(data), read_ahead=16)
        >>> _ = f.seek(1000); f.read(4), f.bytes_read
        (b'\\xe8\\xe9\\xea\\xeb', 16)
    """

    def __init__(
        self, read_range: ReadRange, size: int, *, name: str = "", read_ahead: int = READ_AHEAD
    ) -> None:
        super().__init__()
        self._read_range = read_range
        self._size = size
        self._position = 0
        self._read_ahead = max(1, read_ahead)
        self._windows: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.name = name
        self.bytes_read = 0
        self.requests = 0
        self.pieces: list[tuple[int, bytes]] = []  # everything fetched, for ``write_sparse``

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read_at(self._position, len(view))
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset``, from cached windows or one ranged read."""
        count = max(0, min(count, self._size - offset))
        if count == 0:
            return b""
        with self._lock:
            for start, window in self._windows.items():
                if start <= offset and offset + count <= start + len(window):
                    self._windows.move_to_end(start)
                    return window[offset - start : offset - start + count]
        length = min(max(count, self._read_ahead), self._size - offset)
        window = self._fetch(offset, length)
        with self._lock:
            self._windows[offset] = window
            while len(self._windows) > WINDOWS:
                self._windows.popitem(last=False)
        return window[:count]

    def _fetch(self, start: int, length: int) -> bytes:
        data = self._read_range(start, length)
        with self._lock:
            self.bytes_read += len(data)
            self.requests += 1
            self.pieces.append((start, data))
        return data

    def write_sparse(self, path: str | os.PathLike[str]) -> None:
        """Write a file of ``size`` bytes holding every fetched piece at its offset; the rest
        are holes (zeros that take no disk)."""
        with open(path, "wb") as out:  # noqa: PTH123 (any path-like)
            out.truncate(self._size)
            for start, data in self.pieces:
                out.seek(start)
                out.write(data)

    def fetch_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, bytes]]:
        """Fetch ``(start, length)`` ranges, coalesced and in parallel, as ``(start, bytes)``.

        Neighbours closer than ``COALESCE_GAP`` become one request (reading a gap costs less
        than a round trip), and requests run on a few threads.
        """
        merged = coalesce(ranges, gap=COALESCE_GAP, size=self._size)
        if not merged:
            return []
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(merged))) as pool:
            blobs = list(pool.map(lambda r: self._fetch(r[0], r[1]), merged))
        return [(start, blob) for (start, _), blob in zip(merged, blobs, strict=True)]


def coalesce(ranges: Iterable[tuple[int, int]], *, gap: int, size: int) -> list[tuple[int, int]]:
    """``(start, length)`` ranges clipped to ``size``, sorted, with near neighbours merged.

    Example:
        >>> coalesce([(100, 10), (0, 10), (12, 4)], gap=8, size=1000)
        [(0, 16), (100, 10)]
    """
    merged: list[list[int]] = []
    for start, length in sorted(ranges):
        end = min(start + length, size)
        if end <= start:
            continue
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged]
