"""DirectFile: the bytes on disk are exactly the bytes written, direct or not, at any length."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.storage import direct_file
from app.storage.direct_file import ALIGNMENT, DirectFile, FilledBlock
from tests.full_disk import FullDisk

BUFFER = 16 * ALIGNMENT  # small, so short tests cross many buffer boundaries
LENGTHS = [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, BUFFER - 1, BUFFER, BUFFER + 1, 300_001]


def _write(path: Path, data: bytes, seed: int, *, as_bytes: bool = False) -> DirectFile:
    """Write ``data`` in random pieces: ``bytes`` (copied by ctypes) or memoryview slices."""
    rng = random.Random(seed)
    out = DirectFile(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), buffer_bytes=BUFFER)
    view, offset = memoryview(data), 0
    while offset < len(data):
        step = rng.randint(1, 3 * BUFFER)
        out.write(data[offset : offset + step] if as_bytes else view[offset : offset + step])
        offset += step
    out.close()
    return out


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "memoryview"])
@pytest.mark.parametrize("length", LENGTHS)
def test_direct_file_round_trips_any_length(tmp_path: Path, length: int, as_bytes: bool) -> None:
    data = random.Random(length).randbytes(length)
    path = tmp_path / "out.bin"
    out = _write(path, data, seed=length, as_bytes=as_bytes)
    assert out.closed
    assert out.direct is _supports_direct_io(tmp_path)
    assert path.read_bytes() == data  # padding of the last block truncated away


@pytest.mark.parametrize("length", [1, BUFFER + 1, 300_001])
def test_direct_file_falls_back_to_the_page_cache_where_direct_io_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    real = direct_file.fcntl

    def refuse(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == real.F_SETFL:
            raise OSError(errno.EINVAL, "Invalid argument")
        return int(real.fcntl(fd, cmd, arg))

    monkeypatch.setattr(direct_file, "fcntl", _Fcntl(real, refuse))
    data = random.Random(length).randbytes(length)
    path = tmp_path / "out.bin"
    out = _write(path, data, seed=length)
    assert out.direct is False
    assert path.read_bytes() == data


def test_direct_file_discard_writes_nothing_more_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    out = DirectFile(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), buffer_bytes=BUFFER)
    out.write(b"x" * (BUFFER + 10))  # one full buffer written, 10 bytes held
    out.discard()
    out.discard()  # idempotent
    assert path.stat().st_size == BUFFER
    with pytest.raises(OSError):
        os.fstat(out._fd)  # the descriptor is closed


def test_blocks_are_read_on_another_thread_from_the_memory_that_is_written(
    tmp_path: Path,
) -> None:
    chunks = [
        random.Random(i).randbytes(random.Random(-i).randint(1, 2 * BUFFER)) for i in range(60)
    ]
    path = tmp_path / "out.bin"
    out = DirectFile(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), buffer_bytes=BUFFER)
    digest = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=1) as reader:

        def read(block: FilledBlock) -> None:
            digest.update(block.data)
            block.release()

        for start in range(0, len(chunks), 7):
            for block in out.fill(chunks[start : start + 7]):
                reader.submit(read, block)
                out.write_block(block)
    out.close()
    data = b"".join(chunks)
    assert path.read_bytes() == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_buffer_is_not_filled_again_until_its_block_is_written_and_released(
    tmp_path: Path,
) -> None:
    out = DirectFile(
        os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o600),
        buffer_bytes=BUFFER,
        buffers=2,
    )
    (first,) = out.fill([b"a" * BUFFER])  # buffer 0 handed out; buffer 1 is next
    out.write_block(first)
    filled: list[FilledBlock] = []
    # Filling buffer 1 ends by claiming buffer 0 for what comes next: it waits for the reader.
    filler = threading.Thread(target=lambda: filled.extend(out.fill([b"b" * BUFFER])))
    filler.start()
    filler.join(timeout=0.3)
    assert filler.is_alive()  # the first block is written but still being read
    assert first.data.tobytes() == b"a" * BUFFER  # and its memory still holds its bytes
    first.release()
    filler.join(timeout=10)
    assert not filler.is_alive()
    (second,) = filled
    assert second.data.tobytes() == b"b" * BUFFER
    out.write_block(second)
    second.release()
    out.close()
    assert (tmp_path / "out.bin").read_bytes() == b"a" * BUFFER + b"b" * BUFFER


def test_after_a_failed_write_the_file_refuses_more_bytes_and_cannot_be_closed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = DirectFile(
        os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o600), buffer_bytes=BUFFER
    )
    monkeypatch.setattr(direct_file, "os", FullDisk(after=BUFFER))
    out.write(b"x" * BUFFER)  # fits
    with pytest.raises(OSError, match="No space"):
        out.write(b"y" * (BUFFER + 1))
    with pytest.raises(OSError, match="No space"):
        next(iter(out.fill([b"z"])))  # the file is incomplete: no more bytes
    with pytest.raises(OSError, match="No space"):
        out.close()
    assert out.closed


def _supports_direct_io(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    return True


class _Fcntl:
    """The fcntl module with one function replaced."""

    def __init__(self, real: Any, fcntl: Any) -> None:
        self._real, self.fcntl = real, fcntl

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
