"""Sharded checkpoints: a directory or a ``*.index.json`` weight_map, read as one checkpoint.

transformers saves large models as shards plus an index (``model.safetensors.index.json``,
``pytorch_model.bin.index.json``) whose ``weight_map`` says which shard holds each key.
Each shard is read by its own format's reader (header-only for safetensors, pickle-only for
torch zip); the shards must lie in the index's directory, symlinks resolved, so a hostile
index cannot reach files elsewhere. Shards and indexes are regular files: a shard that is an
index (one listing itself would recurse), a FIFO, socket or device is refused, and a directory
named like an index or a shard is not one.

A composite over the ``Reader`` protocol: each shard is read by the registered reader its
bytes select (``app.readers.registry``), so a format registered there is a shard format too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from app.errors import CorruptCheckpointError, LimitExceededError, NoTensorsError
from app.readers import lazy, registry
from app.readers.limits import MAX_TENSORS_DEFAULT, check_tensor_count
from app.readers.state_dict import AUTO, require_keys
from app.regular_files import (
    DIRECTORY,
    REGULAR,
    file_kind,
    not_regular_error,
    open_regular,
)
from app.tensors import CheckpointIndex, Safety, StateDictCandidate, TensorIndex, TensorInfo

INDEX_SUFFIX = ".index.json"
SHARD_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
MAX_INDEX_BYTES = 100 * 1024 * 1024
_MAX_LISTED = 10


@dataclass(frozen=True, slots=True)
class Shard:
    """One file of a sharded checkpoint, as listed in the report."""

    filename: str
    format: str
    tensor_count: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ShardedCheckpointIndex(CheckpointIndex):
    """A ``CheckpointIndex`` read from several files; ``shards`` lists them in order."""

    shards: tuple[Shard, ...] = ()


@dataclass(frozen=True, slots=True)
class ShardSet:
    """The files of a sharded checkpoint and, with an index, which shard holds each key."""

    files: tuple[Path, ...]
    index_file: Path | None = None
    owners: dict[str, Path] | None = None


def is_sharded(path: Path) -> bool:
    """True for a directory or a ``*.index.json`` file (anything else is one file)."""
    return path.is_dir() or path.name.endswith(INDEX_SUFFIX)


def find_shards(path: Path) -> ShardSet:
    """The shard files of a directory or an index file.

    A directory with one index uses it (with both a safetensors and a .bin index, the
    safetensors one); without an index, its safetensors files are the shards, else its
    other checkpoint files.

    Raises:
        NoTensorsError: No checkpoint files were found.
        CorruptCheckpointError: The index is not a valid weight_map, or names files outside
            its directory, missing files or an index.
        LimitExceededError: The index file is over ``MAX_INDEX_BYTES``.
        SourceNotRegularError: The index or a shard is a FIFO, socket, device or directory.
    """
    if path.is_dir():
        indexes = _entries(path, lambda name: name.endswith(INDEX_SUFFIX))
        if indexes:
            preferred = [p for p in indexes if ".safetensors" in p.name] or indexes
            return _from_index(preferred[0])
        directory = path.resolve()
        names = [p.name for p in _entries(path, lambda name: Path(name).suffix in SHARD_SUFFIXES)]
        files = [_shard_path(directory, name) for name in names]
        safetensors = [p for p in files if p.suffix == ".safetensors"]
        if not files:
            raise NoTensorsError(
                "The directory holds no checkpoint files (*.safetensors, *.bin, *.pt, *.pth, "
                "*.ckpt) and no *.index.json."
            )
        return ShardSet(tuple(safetensors or files))
    return _from_index(path)


def _entries(directory: Path, accept: Callable[[str], bool]) -> list[Path]:
    """The entries of ``directory`` whose names ``accept`` takes, in name order.

    Directories and broken symlinks are not files, whatever their names (``x.index.json/``
    is no index), as for the source's identity (``app.storage.sources``); anything else is
    kept, so a FIFO is refused when opened rather than passed over unnoticed.
    """
    return sorted(
        p for p in directory.iterdir() if accept(p.name) and file_kind(p) not in (None, DIRECTORY)
    )


def _from_index(index_file: Path) -> ShardSet:
    with open_regular(index_file) as f:  # a FIFO here would block the read forever
        size = os.fstat(f.fileno()).st_size
        if size > MAX_INDEX_BYTES:
            raise LimitExceededError(
                f"The index file is {size} bytes, more than the limit {MAX_INDEX_BYTES}.",
                limit="max_index_bytes",
                limit_value=MAX_INDEX_BYTES,
            )
        raw = f.read(MAX_INDEX_BYTES + 1)
    if len(raw) > MAX_INDEX_BYTES:
        raise LimitExceededError(
            f"The index file grew past the limit {MAX_INDEX_BYTES} bytes while it was read.",
            limit="max_index_bytes",
            limit_value=MAX_INDEX_BYTES,
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CorruptCheckpointError(f"{index_file.name} is not valid JSON.") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CorruptCheckpointError(
            f"{index_file.name} has no weight_map object of key -> shard file name."
        )
    if not weight_map:
        raise NoTensorsError(f"The weight_map of {index_file.name} is empty.")
    directory = index_file.parent.resolve()
    paths = {name: _shard_path(directory, name) for name in sorted(set(weight_map.values()))}
    owners = {key: paths[name] for key, name in weight_map.items()}
    return ShardSet(tuple(paths.values()), index_file=index_file, owners=owners)


def _shard_path(directory: Path, name: str) -> Path:
    """The shard ``name`` in ``directory`` (resolved), refusing anything that leaves it.

    A shard is never an index, by its name or its symlink's target, so reading a shard cannot
    read an index again (an index listing itself recursed without end).
    """
    if "\x00" in name or "/" in name or "\\" in name:
        raise _not_beside(name)
    # realpath, not Path.resolve: it does not raise on a symlink loop.
    candidate = Path(os.path.realpath(directory / name))
    if candidate.parent != directory:
        raise _not_beside(name)
    if name.endswith(INDEX_SUFFIX) or candidate.name.endswith(INDEX_SUFFIX):
        raise CorruptCheckpointError(
            f"The shard {name[:80]!r} is an index (*{INDEX_SUFFIX}) itself, not a checkpoint "
            "file; an index lists shard files only."
        )
    kind = file_kind(candidate)
    if kind is None:
        raise CorruptCheckpointError(f"The shard {name[:80]!r} is missing (or a broken symlink).")
    if kind != REGULAR:
        raise not_regular_error(name, kind)
    return candidate


def _not_beside(name: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"The shard {name[:80]!r} is not a file beside the index (in the same directory, "
        "symlinks resolved)."
    )


def read_index(
    path: Path, *, state_dict_key: str = AUTO, max_tensors: int = MAX_TENSORS_DEFAULT
) -> ShardedCheckpointIndex:
    """Index every shard and join them into one checkpoint index, shards in name order.

    Args:
        path: A directory or a ``*.index.json`` file.
        state_dict_key: Applied to every shard (``"auto"`` finds each shard's state_dict).
        max_tensors: The most tensors all shards together may hold.

    Returns:
        The joined index, with the shards listed and a note naming them.

    Raises:
        CorruptCheckpointError: A key is in two shards, or the weight_map names a key its
            shard does not hold.
        NoTensorsError, LimitExceededError, UnsupportedFormatError, UnsafeCheckpointError,
        StateDictKeyError: As for ``read_checkpoint`` on each shard.

    Example:
        >>> ckpt = read_index(Path("llama/model.safetensors.index.json"))  # doctest: +SKIP
        >>> [s.filename for s in ckpt.shards]  # doctest: +SKIP
        ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    """
    found = find_shards(path)
    infos: dict[str, TensorInfo] = {}
    shards: list[Shard] = []
    parts: list[CheckpointIndex] = []
    ignored = 0
    for file in found.files:
        part = registry.index_file(file, state_dict_key=state_dict_key, max_tensors=max_tensors)
        for info in part.index:
            if found.owners is not None and found.owners.get(info.key) != file:
                ignored += 1  # transformers reads a key from the shard its weight_map names
                continue
            if info.key in infos:
                raise CorruptCheckpointError(f"The key {info.key[:80]!r} is in two shards.")
            infos[info.key] = info
        check_tensor_count(len(infos), max_tensors=max_tensors)
        parts.append(part)
        shards.append(Shard(file.name, part.format, len(part.index), file.stat().st_size))
    _check_weight_map(found, infos)
    formats = sorted({p.format for p in parts})
    paths = sorted({p.state_dict_path for p in parts})
    return ShardedCheckpointIndex(
        format=formats[0] if len(formats) == 1 else "mixed",
        index=TensorIndex.from_infos(list(infos.values())),
        state_dict_path=paths[0] if len(paths) == 1 else "",
        candidates=(StateDictCandidate(paths[0] if len(paths) == 1 else "", len(infos)),),
        notes=(
            _shards_note(found, shards),
            *(
                [f"{ignored} shard tensors that the weight_map does not assign were ignored."]
                if ignored
                else []
            ),
            *dict.fromkeys(n for p in parts for n in p.notes),
        ),
        shards=tuple(shards),
    )


def _check_weight_map(found: ShardSet, infos: dict[str, TensorInfo]) -> None:
    if found.owners is None:
        return
    absent = [k for k in found.owners if k not in infos]
    if absent:
        raise CorruptCheckpointError(
            f"The weight_map lists {len(absent)} keys that no shard holds, e.g. {absent[:3]}."
        )


def _shards_note(found: ShardSet, shards: list[Shard]) -> str:
    listed = ", ".join(f"{s.filename} ({s.tensor_count} tensors)" for s in shards[:_MAX_LISTED])
    more = f" and {len(shards) - _MAX_LISTED} more" if len(shards) > _MAX_LISTED else ""
    origin = f" listed in {found.index_file.name}" if found.index_file else ""
    return f"Read as one checkpoint from {len(shards)} shards{origin}: {listed}{more}."


class ShardedSource:
    """A TensorSource over several shards; each shard is opened when first needed."""

    def __init__(self, found: ShardSet, *, state_dict_path: str, stack: ExitStack) -> None:
        self._state_dict_path = state_dict_path
        self._stack = stack
        self._open: dict[Path, lazy.TensorSource] = {}
        self._owner: dict[str, Path] = {}
        if found.owners is not None:
            self._owner = dict(found.owners)
            return
        for file in found.files:
            for key in self._source(file).keys():  # noqa: SIM118 (a TensorSource)
                self._owner.setdefault(key, file)

    def _source(self, file: Path) -> lazy.TensorSource:
        if file not in self._open:
            # Opened once, and spans reopen that very file (see app.regular_files).
            opened = registry.open_file_tensors(file, state_dict_path=self._state_dict_path)
            self._open[file] = self._stack.enter_context(opened)
        return self._open[file]

    def keys(self) -> list[str]:
        return list(self._owner)

    def span(self, key: str) -> lazy.TensorSpan | None:
        require_keys(self._owner, [key])
        return self._source(self._owner[key]).span(key)

    def read(self, key: str) -> torch.Tensor:
        require_keys(self._owner, [key])
        return self._source(self._owner[key]).read(key)


@contextmanager
def open_tensors(path: Path, *, state_dict_path: str = "") -> Iterator[lazy.TensorSource]:
    """Open a sharded checkpoint for tensor by tensor reading (see ``Reader.open_tensors``)."""
    found = find_shards(path)
    with ExitStack() as stack:
        yield ShardedSource(found, state_dict_path=state_dict_path, stack=stack)


def load_tensors(
    path: Path, keys: Iterable[str], *, state_dict_path: str = ""
) -> dict[str, torch.Tensor]:
    """Load the given tensors of a sharded checkpoint onto the CPU.

    Raises:
        KeyError: A key is in no shard.
    """
    with open_tensors(path, state_dict_path=state_dict_path) as source:
        return {key: source.read(key) for key in keys}


def describe_safety(path: Path) -> Safety:
    """One safety listing for all the shards (the guards run on each as for a load)."""
    parts = [registry.describe_file_safety(p) for p in find_shards(path).files]
    formats = sorted({p.format for p in parts})
    return Safety(
        format=formats[0] if len(formats) == 1 else "+".join(formats),
        uses_pickle=any(p.uses_pickle for p in parts),
        pickle_globals=tuple(dict.fromkeys(g for p in parts for g in p.pickle_globals)),
        refused_globals=tuple(dict.fromkeys(g for p in parts for g in p.refused_globals)),
        allowed_globals=tuple(dict.fromkeys(g for p in parts for g in p.allowed_globals)),
    )


def shard_entries(checkpoint: CheckpointIndex) -> list[dict[str, object]] | None:
    """The report's ``checkpoint.shards`` list for a sharded checkpoint, else None."""
    if not isinstance(checkpoint, ShardedCheckpointIndex):
        return None
    return [
        {
            "filename": s.filename,
            "format": s.format,
            "tensor_count": s.tensor_count,
            "size_bytes": s.size_bytes,
        }
        for s in checkpoint.shards
    ]
