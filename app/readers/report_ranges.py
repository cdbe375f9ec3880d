"""Which bytes of a checkpoint a report reads, fetched through a ranged file.

A report of a checkpoint in object storage must not download it: reading the index of a
safetensors file needs its 8-byte length and JSON header; of a torch zip, its end records and
central directory, the local header of every record, and the small records that are not
tensor storages (``data.pkl``, ``byteorder``, ``version``...). ``fetch_report_bytes`` reads
exactly those (coalesced) through a ``RangeFile``, which keeps every piece it fetched; the
caller lays them at their offsets in a sparse local file of the object's size, and the
readers and their guards then run unchanged on it: every byte they read for a report is the
object's own byte at the same offset, and tensor bytes, never read on ``meta``, are holes.

Only the legacy torch format cannot be read this way (its storages are interleaved with the
pickle); ``fetch_report_bytes`` answers False and the caller downloads it whole.
"""

from __future__ import annotations

import struct
import zipfile
from typing import Protocol

from app.formats import ZIP_MAGICS
from app.readers.limits import current_limits

HEAD_BYTES = 64 * 1024
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, then name and extra
LOCAL_SLACK = 160  # torch pads the extra field to 64-byte alignment; zip64 adds 20
DESCRIPTOR_BYTES = 24  # zip64 data descriptor, the largest form

LEGACY_PROTOCOLS = (b"\x80\x02\x8a\x0a", b"\x80\x03\x8a\x0a", b"\x80\x04\x95", b"\x80\x05\x95")


class RangedFile(Protocol):
    """What the planner needs of ``app.storage.ranged.RangeFile``."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, count: int) -> bytes: ...

    def fetch_ranges(self, ranges: list[tuple[int, int]]) -> list[tuple[int, bytes]]: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...

    def read(self, size: int = -1, /) -> bytes | None: ...

    def tell(self) -> int: ...


def fetch_report_bytes(file: RangedFile) -> bool:
    """Fetch what a report of ``file`` reads; False when it must be read whole (legacy).

    A file that is neither safetensors nor a zip gets its head only: the readers then name
    what it is (or refuse it) from the same bytes they would read locally.
    """
    head = file.read_at(0, HEAD_BYTES)
    if head.startswith(LEGACY_PROTOCOLS):
        return False
    if head.startswith(ZIP_MAGICS):
        _fetch_zip(file)
    elif len(head) >= 9 and head[8:9] == b"{":
        _fetch_safetensors_header(file, head)
    return True


def _fetch_safetensors_header(file: RangedFile, head: bytes) -> None:
    """The 8-byte length and the JSON header, when the length is within the limit."""
    (length,) = struct.unpack("<Q", head[:8])
    if length <= current_limits().max_header_bytes and 8 + length <= file.size:
        file.read_at(8, length)  # covered by the head when the header is small


def _fetch_zip(file: RangedFile) -> None:
    """End records and central directory (zipfile reads them), then local headers and the
    records that are not storages."""
    file.seek(0)
    try:
        with zipfile.ZipFile(file) as archive:  # type: ignore[call-overload]
            infos = archive.infolist()
    except Exception:  # damaged: the readers refuse it from the bytes fetched so far
        return
    if len(infos) > current_limits().max_zip_entries:
        return
    windows = [
        (info.header_offset, LOCAL_HEADER.size + len(info.orig_filename.encode()) + LOCAL_SLACK)
        for info in infos
    ]
    fetched = file.fetch_ranges(windows)
    wanted: list[tuple[int, int]] = []
    budget = current_limits().max_pickle_bytes * 2
    for info in infos:
        header = _local_header(file, fetched, info.header_offset)
        if header is None:
            continue
        name_len, extra_len = header
        start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
        wanted.append((info.header_offset, start - info.header_offset))
        parts = info.filename.split("/")
        is_storage = len(parts) == 3 and parts[1] == "data"  # <archive>/data/<storage>
        if not is_storage and info.compress_size <= budget:
            budget -= info.compress_size
            wanted.append((start, info.compress_size))
        if info.flag_bits & 0x08:
            wanted.append((start + info.compress_size, DESCRIPTOR_BYTES))
    file.fetch_ranges(wanted)


def _local_header(
    file: RangedFile, fetched: list[tuple[int, bytes]], offset: int
) -> tuple[int, int] | None:
    """(name length, extra length) of the local header at ``offset``; None if unreadable."""
    raw = _slice(fetched, offset, LOCAL_HEADER.size) or file.read_at(offset, LOCAL_HEADER.size)
    if len(raw) < LOCAL_HEADER.size:
        return None
    fields = LOCAL_HEADER.unpack(raw)
    return fields[9], fields[10]


def _slice(pieces: list[tuple[int, bytes]], offset: int, count: int) -> bytes:
    for start, data in pieces:
        if start <= offset and offset + count <= start + len(data):
            return data[offset - start : offset - start + count]
    return b""
