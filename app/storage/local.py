"""The directory backend of ``Storage``: the data directory by default, or a shared directory
several machines mount (``CKPT_COMPAT_STORAGE_URL=file:///shared/dir``).

A key is a file under the root. Local-disk tricks live here and nowhere else: uploads are
written past the page cache (``DirectFile``) into ``<root>/tmp`` and renamed into place (same
filesystem: a commit never copies), copies are hard links, readers get the stored file
itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.atomic import atomic_file
from app.storage.backend import Block, Download, ObjectInfo, check_key
from app.storage.direct_file import DirectFile, FilledBlock

SHARED_TEMP_STALE_SECONDS = 6 * 3600.0
"""On a shared directory, a temp file untouched this long belongs to a writer that is gone;
younger ones may be another machine's upload in progress."""


class LocalWriter:
    """A streamed write to a temp file beside the store; ``commit`` renames it into place."""

    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage
        fd, name = tempfile.mkstemp(prefix="upload-", dir=storage.tmp_dir)
        self._file = DirectFile(fd)  # past the page cache: written once, read back rarely
        self.tmp_path = Path(name)

    def fill(self, chunks: Iterable[bytes]) -> Iterator[FilledBlock]:
        return self._file.fill(chunks)

    def write_block(self, block: Block) -> None:
        assert isinstance(block, FilledBlock)  # blocks come from this writer's ``fill``
        self._file.write_block(block)

    def commit(self, key: str) -> bool:
        """Close and rename into place; False (temp file kept for ``abort``) when stored.

        The second copy is left for the caller to remove: on ext4, unlinking a 1 GB file
        takes about 0.2 s, which a server can spend after answering.
        """
        self._file.close()
        target = self._storage.path_of(key)
        if target.is_file():
            os.utime(target)  # sent again: its time to expire starts over
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path.replace(target)  # a racing commit of the same key wrote the same bytes
        return True

    def abort(self) -> None:
        self._file.discard()
        self.tmp_path.unlink(missing_ok=True)


class LocalStorage:
    """Objects as files under ``root``; ``shared`` when other machines use the same root."""

    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root = root
        self.shared = shared
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (whether or not it exists)."""
        return self.root / check_key(key)

    def open_writer(self) -> LocalWriter:
        return LocalWriter(self)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as out:
            out.write(data)

    def read_bytes(self, key: str) -> bytes:
        return self.path_of(key).read_bytes()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.path_of(key).open("rb") as source:
            source.seek(start)
            return source.read(length)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self.path_of(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(size_bytes=info.st_size, modified=info.st_mtime)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.path_of(prefix)
        for directory, _dirs, files in os.walk(base):
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                if not name.startswith("."):  # atomic_file's temp files
                    yield f"{relative}/{name}"

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path_of(prefix), ignore_errors=True)

    def copy(self, source: str, target: str) -> bool:
        """A hard link (a reused report or merged file costs no new disk), else a copy."""
        source_path, target_path = self.path_of(source), self.path_of(target)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.suppress(FileExistsError):
                try:
                    os.link(source_path, target_path)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError | FileExistsError):
                        raise
                    shutil.copyfile(source_path, target_path)
        except FileNotFoundError:
            return False
        return True

    def get_local_path(self, key: str) -> Path:
        """The stored file itself (reading a missing one raises FileNotFoundError)."""
        return self.path_of(key)

    @contextlib.contextmanager
    def local_target(self, key: str) -> Iterator[Path]:
        """The final path itself: the writer writes atomically, so it is stored on success."""
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path

    def download(self, key: str) -> Download:
        path = self.path_of(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return Download(path=path)

    def clear_temp(self) -> int:
        """Remove temp files left by an earlier process; on a shared directory only stale
        ones (``SHARED_TEMP_STALE_SECONDS``), since others may be writing."""
        cutoff = time.time() - SHARED_TEMP_STALE_SECONDS if self.shared else None
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if not leftover.is_file():
                    continue
                if cutoff is not None and leftover.stat().st_mtime > cutoff:
                    continue
                leftover.unlink()
                removed += 1
        return removed

    def probe(self) -> str | None:
        """None when the temp directory can be written (a shared one may be unmounted)."""
        return None if os.access(self.tmp_dir, os.W_OK | os.X_OK) else "not writable"
