"""Content-addressed blobs: each uploaded content is stored once, under its sha256."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Uploads live at ``<root>/blobs/<aa>/<sha256>``; partial writes live in ``<root>/tmp``.

    The temp directory sits on the same filesystem as the blobs so that committing an
    upload is an atomic rename, never a copy.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        if not _SHA256.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """True when the content is stored."""
        return self.path_for(sha256).is_file()

    def commit(self, tmp_path: Path, sha256: str) -> bool:
        """Move a finished temp file into place; False when the content is stored already.

        A second copy is left where it is, for the caller to remove: on ext4, unlinking a
        1 GB file takes about 0.2 s, which a server can spend after answering.
        """
        target = self.path_for(sha256)
        if target.is_file():
            os.utime(target)  # sent again: its time to expire starts over
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path.replace(target)
        return True

    def sent_at(self, sha256: str) -> float | None:
        """When the content was last sent (its file's mtime), or None when not stored."""
        try:
            return self.path_for(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def stored(self) -> Iterator[str]:
        """The digests of every stored upload."""
        for path in self.root.glob("??/*"):
            if _SHA256.match(path.name) and path.is_file():
                yield path.name

    def delete(self, sha256: str) -> None:
        """Remove a blob; a missing one is not an error."""
        self.path_for(sha256).unlink(missing_ok=True)

    def clear_temp(self) -> int:
        """Remove temp files left by a previous process (at start-up); returns how many."""
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed
