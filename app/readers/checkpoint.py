"""Read any accepted checkpoint: sniff its format, then dispatch to that format's reader.

A file is opened once here and the readers get a path to that opened file
(``app.regular_files.pin_regular``): a path source is on a volume other writers share, and a
FIFO renamed over it between two of the readers' opens must not block the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from app.readers import lazy, safetensors_reader, sharded, torch_pickle
from app.readers.limits import MAX_TENSORS_DEFAULT, check_keys
from app.readers.sniff import CheckpointFormat, sniff_format
from app.readers.state_dict import AUTO
from app.regular_files import pin_regular
from app.tensors import CheckpointIndex

LEGACY_NOTE = (
    "The file uses the legacy torch.save format, which cannot be read lazily: every byte was "
    "read once (re-save it with torch.save or as safetensors for header-only checks)."
)


def read_checkpoint(
    path: Path, *, state_dict_key: str = AUTO, max_tensors: int = MAX_TENSORS_DEFAULT
) -> CheckpointIndex:
    """Index the state_dict of a checkpoint file without reading tensor bytes.

    Args:
        path: The checkpoint file, in any accepted format whatever its extension, or a
            sharded checkpoint (a directory or a ``*.index.json``, see ``sharded``).
        state_dict_key: ``"auto"`` to find the state_dict inside wrapper dicts, or the
            dotted path of the dict to use (``""`` = the file itself).
        max_tensors: The most tensors the chosen state_dict may hold.

    Returns:
        The format, the index of keys/shapes/dtypes, the chosen path, candidates and notes.

    Raises:
        UnsupportedFormatError: The file is not an accepted format.
        CorruptCheckpointError: The file is damaged.
        UnsafeCheckpointError: The file holds objects that are not loaded safely.
        NoTensorsError: No tensors were found.
        StateDictKeyError: ``state_dict_key`` names no dict holding tensors.
        LimitExceededError: A limit (tensor count, header size) was exceeded.
        SourceNotRegularError: The file (or a shard, an index) is a FIFO, socket or device.

    Example:
        >>> ckpt = read_checkpoint(Path("upload.bin"))  # doctest: +SKIP
        >>> ckpt.format, ckpt.state_dict_path, len(ckpt.index)  # doctest: +SKIP
        ('torch_zip', 'state_dict', 161)
    """
    if sharded.is_sharded(path):
        return check_keys(
            sharded.read_index(path, state_dict_key=state_dict_key, max_tensors=max_tensors)
        )
    with pin_regular(path) as pinned:
        return _read_file(pinned, state_dict_key=state_dict_key, max_tensors=max_tensors)


def _read_file(path: Path, *, state_dict_key: str, max_tensors: int) -> CheckpointIndex:
    fmt = sniff_format(path)
    if fmt is CheckpointFormat.SAFETENSORS:
        return check_keys(
            safetensors_reader.read_index(
                path, state_dict_key=state_dict_key, max_tensors=max_tensors
            )
        )
    found = torch_pickle.read_index(
        path, fmt=fmt, state_dict_key=state_dict_key, max_tensors=max_tensors
    )
    if fmt is CheckpointFormat.TORCH_LEGACY:
        found = replace(found, notes=(*found.notes, LEGACY_NOTE))
    return check_keys(found)


def load_tensors(
    path: Path, *, keys: Iterable[str], state_dict_path: str = ""
) -> dict[str, torch.Tensor]:
    """Load selected tensors of a checkpoint onto the CPU, for a merge.

    Args:
        path: The checkpoint file.
        keys: The keys wanted, as listed by ``read_checkpoint``.
        state_dict_path: ``CheckpointIndex.state_dict_path`` from ``read_checkpoint``.

    Returns:
        Key -> CPU tensor, in the order of ``keys``.

    Raises:
        KeyError: A key is not in the state_dict.
        UnsupportedFormatError, CorruptCheckpointError, UnsafeCheckpointError,
        StateDictKeyError: As for ``read_checkpoint``.

    Example:
        >>> load_tensors(Path("upload.bin"), keys=["fc.weight"])  # doctest: +SKIP
        {'fc.weight': tensor([...])}
    """
    if sharded.is_sharded(path):
        return sharded.load_tensors(path, keys, state_dict_path=state_dict_path)
    with pin_regular(path) as pinned:
        fmt = sniff_format(pinned)
        if fmt is CheckpointFormat.SAFETENSORS:
            return safetensors_reader.load_tensors(pinned, keys, state_dict_path=state_dict_path)
        return torch_pickle.load_tensors(pinned, keys, fmt=fmt, state_dict_path=state_dict_path)


@contextmanager
def open_tensors(path: Path, *, state_dict_path: str = "") -> Iterator[lazy.TensorSource]:
    """Open a checkpoint (file or sharded) to read its tensors one at a time, for a merge.

    Args:
        path: As for ``read_checkpoint``.
        state_dict_path: ``CheckpointIndex.state_dict_path`` from ``read_checkpoint``.

    Yields:
        A ``TensorSource``: ``keys()``, ``read(key)``, and ``span(key)`` where a tensor's
        bytes lie in a file (safetensors, torch zip), for copies that skip this process.
        A span's path reopens the file opened here: read spans while the source is open.

    Example:
        >>> with open_tensors(Path("upload.bin")) as source:  # doctest: +SKIP
        ...     source.read("fc.weight").shape
        torch.Size([1000, 512])
    """
    if sharded.is_sharded(path):
        with sharded.open_tensors(path, state_dict_path=state_dict_path) as source:
            yield source
        return
    with (
        pin_regular(path) as pinned,
        lazy.open_tensors(pinned, state_dict_path=state_dict_path) as source,
    ):
        yield source
