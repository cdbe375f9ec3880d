"""Checkpoint readers: a file becomes a CheckpointIndex; selected tensors load for a merge.

The one dispatch: a directory or ``*.index.json`` is a sharded checkpoint (``sharded``, a
composite over the readers); any other path is one file, read by the registered reader its
bytes select (``registry``). Each format is one module offering the ``Reader`` verbs
(``protocol``); adding a format is that module plus one ``register_reader`` line below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from app.readers import registry, safetensors_reader, sharded, torch_legacy, torch_zip
from app.readers.lazy import TensorSource
from app.readers.limits import MAX_TENSORS_DEFAULT, check_keys
from app.readers.protocol import Reader
from app.readers.registry import register_reader
from app.readers.sniff import CheckpointFormat
from app.readers.source import ByteSource
from app.readers.state_dict import AUTO, PREFERRED_KEYS
from app.tensors import CheckpointIndex, Safety

if TYPE_CHECKING:
    import torch

# The formats, in the order their bytes are tried (the first reader that matches reads).
register_reader(torch_zip.READER)
register_reader(torch_legacy.READER)
register_reader(safetensors_reader.READER)

__all__ = [
    "PREFERRED_KEYS",
    "ByteSource",
    "CheckpointFormat",
    "Reader",
    "describe_safety",
    "load_tensors",
    "open_tensors",
    "read_checkpoint",
    "register_reader",
    "sniff_format",
]


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
    return registry.index_file(path, state_dict_key=state_dict_key, max_tensors=max_tensors)


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
    return registry.load_file_tensors(path, keys, state_dict_path=state_dict_path)


@contextmanager
def open_tensors(path: Path, *, state_dict_path: str = "") -> Iterator[TensorSource]:
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
    with registry.open_file_tensors(path, state_dict_path=state_dict_path) as source:
        yield source


def describe_safety(path: Path) -> Safety:
    """The safety listing of any accepted checkpoint (the guards run as for a load).

    Raises:
        UnsupportedFormatError, ArchiveLayoutError, CorruptCheckpointError,
        LimitExceededError, UnsafeCheckpointError: As for ``guard_torch_file``.

    Example:
        >>> describe_safety(Path("model.pt")).pickle_globals  # doctest: +SKIP
        ('collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage')
    """
    if sharded.is_sharded(path):
        return sharded.describe_safety(path)
    return registry.describe_file_safety(path)


def sniff_format(path: Path) -> str:
    """The format of a checkpoint file, from its leading bytes (never from its name).

    Returns:
        The reader's format: a ``CheckpointFormat`` for the built-in ones.

    Raises:
        UnsupportedFormatError: The bytes are not an accepted checkpoint format (including
            TorchScript archives and exported programs).
        CorruptCheckpointError: The file starts like a zip archive but its directory is damaged.
        SourceNotRegularError: ``path`` is a FIFO, socket or device (never waited on).

    Example:
        >>> sniff_format(Path("resnet.bin"))  # doctest: +SKIP
        <CheckpointFormat.TORCH_ZIP: 'torch_zip'>
    """
    return registry.sniff_file(path)
