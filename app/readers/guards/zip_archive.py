"""Check a torch zip archive byte by byte before torch's own zip reader sees it.

``torch.save`` writes every record stored (never compressed), back to back, each local
header matching its central directory entry, with one top-level folder and nothing before
or after the archive. Anything else is refused here: a deflated record makes torch allocate
its declared size (and ``mmap=True`` returns compressed bytes as tensor data), and
duplicate, overlapping or mismatched records are how one zip shows two readers two files.

Names are matched as torch's reader matches them: PyTorchStreamReader asks miniz for a
record without its case-sensitive flag, and miniz then folds A-Z (only) on both sides, so
``data.pkl`` finds ``archive/DATA.pkl``. Which of two such twins it finds depends on how
miniz sorted its directory (of two twins, the first in the file; of three, not always),
so names that differ only in case are refused, like exact duplicates.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import ArchiveLayoutError
from app.readers.limits import limit_error

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record, 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_SIG_EOCD, _SIG_LOCATOR, _SIG_ZIP64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_SIG_CENTRAL, _SIG_LOCAL, _SIG_DESCRIPTOR = b"PK\x01\x02", b"PK\x03\x04", b"PK\x07\x08"
_MAX16, _MAX32 = 0xFFFF, 0xFFFFFFFF
_FLAG_ENCRYPTED, _FLAG_DESCRIPTOR, _FLAG_STRONG = 0x1, 0x8, 0x40
_MAX_NAME = 255
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_name(name: str) -> str:
    """A record name as torch's zip reader compares it: A-Z lowered, nothing else.

    Example:
        >>> fold_name("archive/DATA.pkl"), fold_name("archive/É")
        ('archive/data.pkl', 'archive/É')
    """
    return name.translate(_ASCII_LOWER)


@dataclass(frozen=True, slots=True)
class ZipRecord:
    """One stored record: where its bytes start in the file and how many there are."""

    name: str
    data_offset: int
    size: int


class ZipRecords(Mapping[str, ZipRecord]):
    """The records of a checked archive, looked up by name as torch's reader looks them up.

    Iterating gives the names as stored; ``records["archive/DATA/0"]`` finds the record
    ``archive/data/0``, as torch does. No two records fold to the same name.

    Attributes:
        prefix: The one top-level folder every record is in (torch's archive name).
    """

    def __init__(self, records: dict[str, ZipRecord], prefix: str) -> None:
        self._by_folded = {fold_name(name): record for name, record in records.items()}
        self.prefix = prefix

    def __getitem__(self, name: str) -> ZipRecord:
        return self._by_folded[fold_name(name)]

    def __iter__(self) -> Iterator[str]:
        return (record.name for record in self._by_folded.values())

    def __len__(self) -> int:
        return len(self._by_folded)


@dataclass(frozen=True, slots=True)
class _Central:
    name: str
    flags: int
    method: int
    crc: int
    size: int
    offset: int


def check_zip(path: Path, *, max_entries: int) -> ZipRecords:
    """Verify the archive is laid out as ``torch.save`` writes it.

    Args:
        path: A file that starts with a zip signature.
        max_entries: The most records allowed.

    Returns:
        Record name -> ZipRecord, for every record, matched as torch matches names.

    Raises:
        ArchiveLayoutError: Compressed, encrypted, duplicate (also when their names differ
            only in case), overlapping or mismatched records, odd names, junk before or
            after the archive.
        LimitExceededError: More than ``max_entries`` records.

    Example:
        >>> check_zip(Path("model.pt"), max_entries=1000)["archive/data.pkl"]  # doctest: +SKIP
        ZipRecord(name='archive/data.pkl', data_offset=64, size=268)
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        count, cd_offset, cd_size, cd_end = _find_directory(f, size)
        if count > max_entries:
            raise limit_error(
                f"The zip archive holds {count} records.",
                limit="max_zip_entries",
                value=max_entries,
            )
        if cd_offset + cd_size != cd_end:
            raise _layout("its central directory is not where the end record says")
        f.seek(cd_offset)
        directory = f.read(cd_size)
        centrals = _parse_directory(directory, count)
        records = _check_records(f, centrals, cd_offset)
    prefixes = {name.split("/", 1)[0] for name in records}
    if len(prefixes) != 1 or any("/" not in name for name in records):
        raise _layout("its records are not all inside one top-level folder")
    return ZipRecords(records, prefixes.pop())


def stored_byteorder(path: Path, records: ZipRecords) -> str:
    """The byte order the storages are in: the byteorder record, found as torch finds it.

    Without one, torch reads little-endian. Anything but "little" or "big" is what the
    record holds (torch refuses it).
    """
    record = records.get(f"{records.prefix}/byteorder")
    if record is None:
        return "little"
    with path.open("rb") as f:
        f.seek(record.data_offset)
        return f.read(min(record.size, 16)).decode(errors="replace")


def _find_directory(f: BinaryIO, size: int) -> tuple[int, int, int, int]:
    """(entries, central directory offset, its size, where it must end)."""
    tail_len = min(size, _EOCD.size + _MAX16 + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(_SIG_EOCD)
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, pos)
            if pos + _EOCD.size + fields[7] == len(tail):
                break
        pos = tail.rfind(_SIG_EOCD, 0, pos)
    else:
        raise _layout("it has no end record at its very end (data after the archive?)")
    _, disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = fields
    eocd_at = size - tail_len + pos
    if disk or cd_disk or on_disk != total:
        raise _layout("it claims to span several disks")
    # Zip64 (torch.save always writes it): a locator right before the end record points
    # at the zip64 end record, which then holds the authoritative values.
    loc_at = pos - _ZIP64_LOCATOR.size
    if loc_at < 0 or tail[loc_at : loc_at + 4] != _SIG_LOCATOR:
        if _MAX16 in (on_disk, total) or _MAX32 in (cd_size, cd_offset):
            raise _layout("its zip64 end record is missing")
        return total, cd_offset, cd_size, eocd_at
    _, _, zip64_at, _ = _ZIP64_LOCATOR.unpack_from(tail, loc_at)
    zip64_end = eocd_at - _ZIP64_LOCATOR.size
    if zip64_at + _ZIP64_EOCD.size != zip64_end:
        raise _layout("its zip64 end record is not where the locator says")
    f.seek(zip64_at)
    sig, _, _, _, disk64, cd_disk64, on_disk64, total64, cd_size64, cd_offset64 = (
        _ZIP64_EOCD.unpack(f.read(_ZIP64_EOCD.size))
    )
    if sig != _SIG_ZIP64 or disk64 or cd_disk64 or on_disk64 != total64:
        raise _layout("its zip64 end record is damaged")
    return total64, cd_offset64, cd_size64, zip64_at


def _parse_directory(directory: bytes, count: int) -> list[_Central]:
    centrals: list[_Central] = []
    names: dict[str, str] = {}  # folded -> as stored
    pos = 0
    for _ in range(count):
        if pos + _CENTRAL.size > len(directory):
            raise _layout("its central directory is shorter than it claims")
        fields = _CENTRAL.unpack_from(directory, pos)
        sig, flags, method, crc = fields[0], fields[3], fields[4], fields[7]
        csize, usize, name_len, extra_len, comment_len, offset = (
            fields[8], fields[9], fields[10], fields[11], fields[12], fields[16]
        )  # fmt: skip
        if sig != _SIG_CENTRAL:
            raise _layout("its central directory is damaged")
        start = pos + _CENTRAL.size
        raw_name = directory[start : start + name_len]
        extra = directory[start + name_len : start + name_len + extra_len]
        pos = start + name_len + extra_len + comment_len
        csize, usize, offset = _zip64_values(extra, csize, usize, offset)
        name = _check_name(raw_name)
        twin = names.get(fold_name(name))
        if twin == name:
            raise _layout(f"the record {name!r} appears twice")
        if twin is not None:
            raise _layout(
                f"the records {twin!r} and {name!r} differ only in case, and torch's zip "
                "reader takes either name for the other"
            )
        names[fold_name(name)] = name
        if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG):
            raise _layout(f"the record {name!r} is encrypted")
        if method != 0 or csize != usize:
            raise _layout(f"the record {name!r} is compressed (torch.save never compresses)")
        centrals.append(_Central(name, flags, method, crc, csize, offset))
    if pos != len(directory):
        raise _layout("its central directory holds more than its records")
    return centrals


def _zip64_values(extra: bytes, csize: int, usize: int, offset: int) -> tuple[int, int, int]:
    """Replace 0xFFFFFFFF fields by the 64-bit values of the zip64 extra field."""
    if _MAX32 not in (csize, usize, offset):
        return csize, usize, offset
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag != 1:
            continue
        values = [v for v in (usize, csize, offset)]
        at = 0
        for i, v in enumerate(values):
            if v == _MAX32:
                if at + 8 > len(body):
                    raise _layout("a zip64 extra field is too short")
                values[i] = struct.unpack_from("<Q", body, at)[0]
                at += 8
        return values[1], values[0], values[2]
    raise _layout("a record's zip64 extra field is missing")


def _check_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _layout("a record name is not UTF-8") from None
    parts = name.split("/")
    # torch names the top folder after the saved file's stem, so any printable text is
    # fine; what is refused is what a path could abuse: "..", "/x", "\\", control chars.
    if (
        not name
        or len(name) > _MAX_NAME
        or "\\" in name
        or any(not p or p in (".", "..") for p in parts)
        or any(unicodedata.category(ch)[0] == "C" for ch in name)
    ):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise _layout(f"the record name {shown!r} is not a plain relative path")
    return name


def _check_records(f: BinaryIO, centrals: list[_Central], cd_offset: int) -> dict[str, ZipRecord]:
    """Every local header matches its directory entry and records tile the file exactly."""
    records: dict[str, ZipRecord] = {}
    expected = 0
    for entry in sorted(centrals, key=lambda c: c.offset):
        if entry.offset != expected:
            where = "overlaps another" if entry.offset < expected else "leaves a gap before it"
            if expected == 0:
                where = "has data before it"
            raise _layout(f"the record {entry.name!r} {where}")
        f.seek(entry.offset)
        header = f.read(_LOCAL.size)
        if len(header) < _LOCAL.size:
            raise _layout("a local header is cut off")
        sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(header)
        name = f.read(name_len)
        extra = f.read(extra_len)
        if (
            sig != _SIG_LOCAL
            or flags != entry.flags
            or method != entry.method
            or name != entry.name.encode()
        ):
            raise _layout(f"the local header of {entry.name!r} differs from the directory")
        data_offset = entry.offset + _LOCAL.size + name_len + extra_len
        end = data_offset + entry.size
        if flags & _FLAG_DESCRIPTOR:
            end = _check_descriptor(f, entry, end)
        else:
            csize, usize, _ = _zip64_values(extra, csize, usize, 0)
            if (crc, csize, usize) != (entry.crc, entry.size, entry.size):
                raise _layout(f"the local header of {entry.name!r} differs from the directory")
        records[entry.name] = ZipRecord(entry.name, data_offset, entry.size)
        expected = end
    if expected != cd_offset:
        raise _layout("there is data between the last record and the directory")
    return records


def _check_descriptor(f: BinaryIO, entry: _Central, at: int) -> int:
    """Where the data descriptor after a record ends; its values must match the directory."""
    f.seek(at)
    raw = f.read(24)
    if raw[:4] == _SIG_DESCRIPTOR:
        at, raw = at + 4, raw[4:] + f.read(4)
    if len(raw) >= 20 and struct.unpack_from("<IQQ", raw) == (entry.crc, entry.size, entry.size):
        return at + 20
    if len(raw) >= 12 and struct.unpack_from("<III", raw) == (entry.crc, entry.size, entry.size):
        return at + 12
    raise _layout(f"the data descriptor of {entry.name!r} differs from the directory")


def _layout(problem: str) -> ArchiveLayoutError:
    return ArchiveLayoutError(
        f"The zip archive was refused: {problem}. torch.save writes uncompressed records "
        "back to back; save the state_dict with torch.save and upload that file unchanged.",
    )
