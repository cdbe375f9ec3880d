"""The catalogue index on disk: one gzipped JSON file per set of library versions.

The directory is keyed by the versions of torch, torchvision, timm and transformers (and the
signature format), so data directories on one machine share it and an upgrade builds a new
one beside the old. Chunks of a build are kept as they finish, so a restart resumes a build
instead of starting over; the finished index is written atomically.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from app.atomic import atomic_file
from app.matching.signature import ArchitectureSignature

FORMAT_VERSION = 1
"""Bumped whenever signatures change meaning: an index of another format is not read."""

CHUNK_SIZE = 24
"""Architectures per worker call: a few seconds each, so checks queued meanwhile wait little."""

INDEX_FILE = "index.json.gz"
LIBRARIES = ("torch", "torchvision", "timm", "transformers")


def library_versions() -> dict[str, str]:
    """The versions the index depends on (read from package metadata: no import of torch)."""
    found = {"format": str(FORMAT_VERSION)}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


@functools.cache
def _key() -> str:
    text = json.dumps(library_versions(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def index_dir(cache_dir: Path) -> Path:
    """The directory of the index for the installed library versions."""
    return cache_dir / f"catalog-{_key()}"


def index_path(cache_dir: Path) -> Path:
    """The finished index file (absent until a build finishes)."""
    return index_dir(cache_dir) / INDEX_FILE


def chunks_of(names: Sequence[str], size: int = CHUNK_SIZE) -> list[list[str]]:
    """``names`` sorted and cut into chunks, the same way every time."""
    ordered = sorted(names)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def chunk_path(cache_dir: Path, names: Sequence[str]) -> Path:
    """Where the signatures of one chunk are kept until the index is finished."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return index_dir(cache_dir) / "chunks" / f"{digest}.json.gz"


@dataclass(frozen=True)
class CatalogIndex:
    """The signatures of the catalogue and what the build left out."""

    signatures: tuple[ArchitectureSignature, ...]
    failed: tuple[str, ...]
    versions: dict[str, str]
    build_seconds: float


def write_signatures(
    path: Path,
    signatures: Sequence[ArchitectureSignature],
    *,
    failed: Sequence[str] = (),
    build_seconds: float = 0.0,
) -> int:
    """Write signatures as gzipped JSON (folded keys shared in one table); returns bytes."""
    folds: dict[str, int] = {}
    entries = [s.to_json(folds) for s in signatures]
    document = {
        "versions": library_versions(),
        "folds": list(folds),
        "architectures": entries,
        "failed": list(failed),
        "build_seconds": round(build_seconds, 3),
    }
    data = gzip.compress(json.dumps(document, separators=(",", ":")).encode(), mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as out:
        out.write(data)
    return len(data)


def read_signatures(path: Path) -> CatalogIndex:
    """Read an index or chunk file, cached while the file stays the same.

    Raises:
        OSError: It cannot be read.
        ValueError: It is not an index of this format.
    """
    stat = path.stat()
    return _read_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_cached(path: Path, _mtime_ns: int, _size: int) -> CatalogIndex:
    document: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    if document.get("versions", {}).get("format") != str(FORMAT_VERSION):
        raise ValueError(f"{path.name} is not a catalogue index of format {FORMAT_VERSION}")
    folds = document["folds"]
    return CatalogIndex(
        signatures=tuple(
            ArchitectureSignature.from_json(e, folds) for e in document["architectures"]
        ),
        failed=tuple(document["failed"]),
        versions=document["versions"],
        build_seconds=float(document["build_seconds"]),
    )


def load_index(cache_dir: Path) -> CatalogIndex | None:
    """The finished index for the installed libraries, or None while there is none."""
    try:
        return read_signatures(index_path(cache_dir))
    except (OSError, ValueError):
        return None


def build_chunk(cache_dir: Path, names: Sequence[str]) -> int:
    """Describe one chunk of architectures and keep their signatures; returns how many."""
    from app.catalog_index.build import build_signatures

    started = time.perf_counter()
    signatures, failed = build_signatures(names)
    write_signatures(
        chunk_path(cache_dir, names),
        signatures,
        failed=failed,
        build_seconds=time.perf_counter() - started,
    )
    return len(signatures)


def missing_chunks(cache_dir: Path, names: Sequence[str]) -> list[list[str]]:
    """The chunks of ``names`` not built yet."""
    return [c for c in chunks_of(names) if not chunk_path(cache_dir, c).exists()]


def finish_index(cache_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """Join the chunks of ``names`` into the index file and remove them.

    A chunk that is missing (its worker crashed or timed out) counts as failed names.

    Returns:
        ``architectures``, ``failed``, ``bytes`` and ``build_seconds`` of the index.
    """
    signatures: list[ArchitectureSignature] = []
    failed: list[str] = []
    seconds = 0.0
    for chunk in chunks_of(names):
        try:
            part = read_signatures(chunk_path(cache_dir, chunk))
        except (OSError, ValueError):
            failed += chunk
            continue
        signatures += part.signatures
        failed += part.failed
        seconds += part.build_seconds
    size = write_signatures(index_path(cache_dir), signatures, failed=failed, build_seconds=seconds)
    shutil.rmtree(index_dir(cache_dir) / "chunks", ignore_errors=True)
    return {
        "architectures": len(signatures),
        "failed": len(failed),
        "bytes": size,
        "build_seconds": round(seconds, 1),
    }


def build_index(
    cache_dir: Path, names: Sequence[str] | None = None, *, progress: Any = None
) -> dict[str, Any]:
    """Build the whole index in this process (the ``ckpt-compat index`` command, tests).

    Args:
        cache_dir: The cache directory (``CKPT_COMPAT_CACHE_DIR``).
        names: Qualified names to index; the whole catalogue when None.
        progress: Called with (built, total) after each chunk.
    """
    from app.catalog_index.build import catalogue_names

    chosen = list(names) if names is not None else catalogue_names()
    todo = missing_chunks(cache_dir, chosen)
    done = len(chosen) - sum(len(c) for c in todo)
    for chunk in todo:
        build_chunk(cache_dir, chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, len(chosen))
    return finish_index(cache_dir, chosen)
