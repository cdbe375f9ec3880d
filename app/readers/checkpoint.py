"""Read any accepted checkpoint: sniff its format, then dispatch to that format's reader."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from app.readers import safetensors_reader, torch_pickle
from app.readers.limits import MAX_TENSORS_DEFAULT
from app.readers.sniff import CheckpointFormat, sniff_format
from app.readers.state_dict import AUTO
from app.tensors import CheckpointIndex


def read_checkpoint(
    path: Path, *, state_dict_key: str = AUTO, max_tensors: int = MAX_TENSORS_DEFAULT
) -> CheckpointIndex:
    """Index the state_dict of a checkpoint file without reading tensor bytes.

    Args:
        path: The checkpoint file, in any accepted format whatever its extension.
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

    Example:
        >>> ckpt = read_checkpoint(Path("upload.bin"))  # doctest: +SKIP
        >>> ckpt.format, ckpt.state_dict_path, len(ckpt.index)  # doctest: +SKIP
        ('torch_zip', 'state_dict', 161)
    """
    fmt = sniff_format(path)
    if fmt is CheckpointFormat.SAFETENSORS:
        return safetensors_reader.read_index(
            path, state_dict_key=state_dict_key, max_tensors=max_tensors
        )
    return torch_pickle.read_index(
        path, fmt=fmt, state_dict_key=state_dict_key, max_tensors=max_tensors
    )


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
    fmt = sniff_format(path)
    if fmt is CheckpointFormat.SAFETENSORS:
        return safetensors_reader.load_tensors(path, keys, state_dict_path=state_dict_path)
    return torch_pickle.load_tensors(path, keys, fmt=fmt, state_dict_path=state_dict_path)
