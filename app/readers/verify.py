"""The last step of a merge: read back the written file and check it against what was meant.

A merge used to report success for a file safetensors would not open (an ``F4`` tensor
written with twice the bytes its header gave). Every merged file is now read back before the
check succeeds: a safetensors file's header against its bytes (the byte ranges tile the data
section exactly, each is the tensor's elements times its dtype's size), a ``.pt`` file by
``torch.load`` itself; in both, the keys, shapes and dtypes must be the ones intended.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from app.errors import AppError, InternalError
from app.readers.guards.safetensors_header import parse_header
from app.readers.limits import ReadLimits
from app.readers.safetensors_reader import DTYPES, METADATA_KEY, tensor_info

log = logging.getLogger(__name__)

Expected = Mapping[str, tuple[tuple[int, ...], torch.dtype]]
"""Key -> (shape, dtype) of every tensor the file must hold, and nothing else."""


def verify_merged(path: Path, expected: Expected, *, format: str) -> None:
    """Check the merged file at ``path``; remove it and raise when it is not as intended.

    Args:
        path: The written file.
        expected: Key -> (shape, dtype) of every tensor written.
        format: ``safetensors`` or ``pt``.

    Raises:
        InternalError: The file does not match (a bug in the writer, never the caller's).
    """
    try:
        found = _read_safetensors(path) if format == "safetensors" else _read_pt(path)
        problem = _difference(found, expected)
    except (AppError, OSError, ValueError, RuntimeError, KeyError) as exc:
        problem = f"it could not be read back ({type(exc).__name__})"
    if problem is None:
        return
    path.unlink(missing_ok=True)
    log.error("merged file %s failed verification: %s", path, problem)
    raise InternalError(
        f"The merged state_dict was written but did not verify: {problem}. It was removed; "
        "the error was logged on the server."
    )


def _read_safetensors(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    size = path.stat().st_size
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if 8 + header_len > size:
            raise ValueError("header longer than the file")
        raw = f.read(header_len)
    data_len = size - 8 - header_len
    # Ranges must tile [0, data_len) exactly; our own file, so no tensor-count limit applies.
    header = parse_header(raw, data_len=data_len, limits=ReadLimits(max_tensors=2**62))
    found = {}
    for key, entry in header.items():
        if key == METADATA_KEY:
            continue
        if entry.get("dtype") not in DTYPES:
            raise ValueError("unknown dtype code")
        info = tensor_info(key, entry, data_len)  # byte length == elements * dtype size
        found[key] = (info.shape, info.dtype)
    return found


def _read_pt(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    # mmap: torch checks every view against its storage record without reading the data.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: (tuple(v.shape), _name(v.dtype)) for k, v in state.items()}


def _difference(found: Mapping[str, tuple[tuple[int, ...], str]], expected: Expected) -> str | None:
    if set(found) != set(expected):
        return f"it holds {len(found)} keys, not the {len(expected)} written"
    for key, (shape, dtype) in expected.items():
        if found[key] != (tuple(shape), _name(dtype)):
            return f"a tensor's shape or dtype differs ({found[key][1]}, not {_name(dtype)})"
    return None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
