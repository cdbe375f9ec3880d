"""Checkpoints read in place from a shared volume: only under the configured source roots.

A model registry that shares a volume with the service names a file or directory by path
instead of sending it. Paths are checked lexically (absolute, no ``..``) and after resolving
symlinks (the real path must lie under the real path of a root), so neither traversal nor a
symlink that points elsewhere reaches outside the roots. The source is identified without
reading its bytes: the sha256 of its real path and the names, sizes and modification times
of its files, so a changed file is a new source while a 20 GB file costs nothing to submit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from app.errors import SourceForbiddenError, SourceNotFoundError

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
    if not real.exists():
        raise SourceNotFoundError("No file or directory at this path.")
    files = _files_of(real)
    for file in files:
        # The shards of a directory or index are read too: none may lead outside the roots.
        if not _under_roots(Path(os.path.realpath(file)), real_roots):
            raise SourceForbiddenError(
                f"{file.name!r}, read with this source, is a symlink that leads outside the "
                "source roots.",
                roots=_shown(roots),
            )
    return PathSource(real, given.name or real.name, *_identify(real, files))


def _under_roots(real: Path, real_roots: Sequence[Path]) -> bool:
    return any(real.is_relative_to(root) for root in real_roots)


def _files_of(real: Path) -> list[Path]:
    """The files a source is read from: one file, or those of a directory / beside an index."""
    if real.is_dir() or real.name.endswith(INDEX_SUFFIX):
        directory = real if real.is_dir() else real.parent
        return sorted(p for p in directory.iterdir() if p.is_file())
    return [real]


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
