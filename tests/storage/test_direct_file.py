"""DirectFile: the bytes on disk are exactly the bytes written, direct or not, at any length."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest

from app.storage import direct_file
from app.storage.direct_file import ALIGNMENT, DirectFile

BUFFER = 16 * ALIGNMENT  # small, so short tests cross many buffer boundaries
LENGTHS = [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, BUFFER - 1, BUFFER, BUFFER + 1, 300_001]


def _write(path: Path, data: bytes, seed: int) -> DirectFile:
    rng = random.Random(seed)
    out = DirectFile(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), buffer_bytes=BUFFER)
    view, offset = memoryview(data), 0
    while offset < len(data):
        step = rng.randint(1, 3 * BUFFER)
        out.write(view[offset : offset + step])
        offset += step
    out.close()
    return out


@pytest.mark.parametrize("length", LENGTHS)
def test_direct_file_round_trips_any_length(tmp_path: Path, length: int) -> None:
    data = random.Random(length).randbytes(length)
    path = tmp_path / "out.bin"
    out = _write(path, data, seed=length)
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
