"""Checkpoints read in place from a shared volume: only under the configured source roots.

A model registry that shares a volume with the service names a file or directory by path
instead of sending it. Paths are checked lexically (absolute, no ``..``) and after resolving
symlinks (the real path must lie under the real path of a root), so neither traversal nor a
symlink that points elsewhere reaches outside the roots. The source is identified without
reading its bytes: the sha256 of its real path and the names, sizes and modification times
of its files, so a changed file is a new source while a 20 GB file costs nothing to submit.
Only regular files are read: a FIFO, socket or device as the source or among the files it
reads (beside an index, in a directory) is refused, since opening one could block a worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from app.errors import SourceForbiddenError, SourceNotFoundError
from app.regular_files import DIRECTORY, REGULAR, file_kind, not_regular_error

INDEX_SUFFIX = ".index.json"


@dataclass(frozen=True, slots=True)
class PathSource:
    """A checked path source.

    Attributes:
        path: The real path (symlinks resolved) the worker reads in place.
        filename: The name shown in the check and its report.
        size_bytes: The file's size, or the total of the files beside an index / in a directory.
        fingerprint: sha256 hex of the source's identity (real path, names, sizes, mtimes).
    """

    path: Path
    filename: str
    size_bytes: int
    fingerprint: str


def resolve_source(raw: str, roots: Sequence[Path]) -> PathSource:
    """Check that ``raw`` names a file or directory under one of ``roots`` and identify it.

    Args:
        raw: The path from the request.
        roots: ``Settings.source_roots``; empty means path sources are off.

    Returns:
        The real path with its display name, size and fingerprint.

    Raises:
        SourceForbiddenError: Path sources are off, the path is relative, holds ``..``, or
            resolves (symlinks included) outside every root.
        SourceNotFoundError: The path is under a root but does not exist.
        SourceNotRegularError: The path, or a file beside an index / in a directory, is a
            FIFO, socket or device (a directory named like an index is read as a directory).

    Example:
        >>> resolve_source("/models/llama/model.safetensors.index.json", [Path("/models")])
        ... # doctest: +SKIP
        PathSource(path=PosixPath('/models/llama/model.safetensors.index.json'), ...)
    """
    if not roots:
        raise SourceForbiddenError(
            "Path sources are off on this server; set CKPT_COMPAT_SOURCE_ROOTS to the "
            "directories it may read, or upload the file.",
        )
    given = PurePath(raw)
    if "\x00" in raw or not given.is_absolute() or ".." in given.parts:
        raise SourceForbiddenError(
            "The path must be absolute and may not contain '..'.", roots=_shown(roots)
        )
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    real = Path(os.path.realpath(raw))
    if not _under_roots(real, real_roots):
        raise SourceForbiddenError(
            "The path is outside the source roots (after resolving symlinks).",
            roots=_shown(roots),
        )
    kind = file_kind(real)
    if kind is None:
        raise SourceNotFoundError("No file or directory at this path.")
    if kind not in (REGULAR, DIRECTORY):
        raise not_regular_error(given.name or real.name, kind)
    files = _files_of(real, real_roots, roots)
    return PathSource(real, given.name or real.name, *_identify(real, files))


def _under_roots(real: Path, real_roots: Sequence[Path]) -> bool:
    return any(real.is_relative_to(root) for root in real_roots)


def _files_of(real: Path, real_roots: Sequence[Path], roots: Sequence[Path]) -> list[Path]:
    """The files a source is read from: one file, or those of a directory / beside an index.

    An index may name any file beside it as a shard and is not read here, so every entry
    beside it counts: none may lead outside the roots or be a FIFO, socket or device.
    Directories (and broken symlinks) are not files a source reads.
    """
    if not (real.is_dir() or real.name.endswith(INDEX_SUFFIX)):
        return [real]
    files: list[Path] = []
    for entry in sorted((real if real.is_dir() else real.parent).iterdir()):
        kind = file_kind(entry)
        if kind in (None, DIRECTORY):
            continue
        # Checked first, so the kind of a file outside the roots is never disclosed.
        if not _under_roots(Path(os.path.realpath(entry)), real_roots):
            raise SourceForbiddenError(
                f"{entry.name!r}, read with this source, is a symlink that leads outside the "
                "source roots.",
                roots=_shown(roots),
            )
        if kind != REGULAR:
            raise not_regular_error(entry.name, kind, role=", read with this source,")
        files.append(entry)
    return files


def _identify(real: Path, files: Sequence[Path]) -> tuple[int, str]:
    """(size, fingerprint) of a source and its files."""
    listing: list[tuple[str, int, int]] = []
    for file in files:
        stat = file.stat()
        listing.append((file.name, stat.st_size, stat.st_mtime_ns))
    identity = json.dumps([str(real), listing], separators=(",", ":")).encode()
    return sum(size for _, size, _ in listing), hashlib.sha256(identity).hexdigest()


def _shown(roots: Sequence[Path]) -> list[str]:
    return [str(root) for root in roots]
