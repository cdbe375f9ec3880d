"""The safetensors format: the JSON header for the index and spans, safe_open for tensors.

Recognised by its 8-byte header length followed by ``{``; nothing in it is a pickle, so its
safety listing is the format alone. The header is read through the source's file; only
``safe_open`` and the spans (copied by the kernel) need a local path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from app.errors import (
    CorruptCheckpointError,
    NoTensorsError,
    StateDictKeyError,
)
from app.formats import SAFETENSORS_DESCRIPTION, CheckpointFormat, safetensors_header_length
from app.readers.guards.safetensors_header import check_header_length, parse_header
from app.readers.lazy import SpanSource, TensorSource, TensorSpan
from app.readers.limits import MAX_TENSORS_DEFAULT, check_tensor_count
from app.readers.source import ByteSource, Head, as_source
from app.readers.state_dict import AUTO, require_keys
from app.tensors import CheckpointIndex, Safety, StateDictCandidate, TensorIndex, TensorInfo

MAX_HEADER_BYTES = 100 * 1024 * 1024
METADATA_KEY = "__metadata__"
# safetensors dtype code -> (torch dtype name, bits per element).
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64),
    "F32": ("float32", 32),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I64": ("int64", 64),
    "I32": ("int32", 32),
    "I16": ("int16", 16),
    "I8": ("int8", 8),
    "U64": ("uint64", 64),
    "U32": ("uint32", 32),
    "U16": ("uint16", 16),
    "U8": ("uint8", 8),
    "BOOL": ("bool", 8),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F4": ("float4_e2m1fn_x2", 4),
    "C64": ("complex64", 64),
    "C128": ("complex128", 128),
}


FORMAT = CheckpointFormat.SAFETENSORS


class SafetensorsReader:
    """The ``Reader`` of safetensors files."""

    format: str = FORMAT
    description = SAFETENSORS_DESCRIPTION

    def matches(self, head: Head) -> bool:
        """An 8-byte header length that fits the file, then ``{``."""
        header_len = safetensors_header_length(head.data)
        return header_len is not None and 8 + header_len <= head.size

    def read_index(
        self, source: ByteSource, *, state_dict_key: str, max_tensors: int
    ) -> CheckpointIndex:
        return read_index(source, state_dict_key=state_dict_key, max_tensors=max_tensors)

    @contextmanager
    def open_tensors(self, source: ByteSource, *, state_dict_path: str) -> Iterator[TensorSource]:
        yield SpanSource(safetensors_spans(source, state_dict_path=state_dict_path))

    def load_tensors(
        self, source: ByteSource, keys: Iterable[str], *, state_dict_path: str
    ) -> dict[str, torch.Tensor]:
        return load_tensors(source, keys, state_dict_path=state_dict_path)

    def describe_safety(self, source: ByteSource) -> Safety:
        return Safety(format=FORMAT.value, uses_pickle=False)


READER = SafetensorsReader()


def read_index(
    path: ByteSource | Path,
    *,
    state_dict_key: str = AUTO,
    max_tensors: int = MAX_TENSORS_DEFAULT,
) -> CheckpointIndex:
    """Index a safetensors file from its header alone.

    Args:
        path: The safetensors file (a source, or a local path opened as one).
        state_dict_key: ``"auto"`` or ``""``; a safetensors file is one flat state_dict.
        max_tensors: The most tensors the file may hold.

    Returns:
        The index (keys in header order), with path ``""`` and one candidate.

    Raises:
        CorruptCheckpointError: The header is not valid safetensors JSON.
        LimitExceededError: The header or the tensor count exceeds its limit.
        NoTensorsError: The header lists no tensors.
        StateDictKeyError: ``state_dict_key`` is neither ``"auto"`` nor ``""``.
    """
    with as_source(path) as source:
        header, data_len = read_header(source)
    notes: list[str] = []
    if METADATA_KEY in header:
        notes.append("The header's __metadata__ entry was ignored.")
    entries = {k: v for k, v in header.items() if k != METADATA_KEY}
    if not entries:
        raise NoTensorsError("The safetensors header lists no tensors.")
    check_tensor_count(len(entries), max_tensors=max_tensors)
    candidates = (StateDictCandidate("", len(entries)),)
    if state_dict_key not in (AUTO, ""):
        raise StateDictKeyError(
            f"state_dict_key {state_dict_key!r} does not apply: a safetensors file is one "
            f"flat state_dict. Candidates: '' ({len(entries)} tensors).",
            candidates=[""],
        )
    infos = [tensor_info(key, entry, data_len) for key, entry in entries.items()]
    unknown = sorted({i.dtype for i in infos if i.dtype.startswith("safetensors:")})
    if unknown:
        notes.append(f"Unknown safetensors dtype codes kept as-is: {', '.join(unknown)}.")
    return CheckpointIndex(
        format=CheckpointFormat.SAFETENSORS.value,
        index=TensorIndex.from_infos(infos),
        state_dict_path="",
        candidates=candidates,
        notes=tuple(notes),
    )


def load_tensors(
    path: ByteSource | Path, keys: Iterable[str], *, state_dict_path: str = ""
) -> dict[str, torch.Tensor]:
    """Load the given tensors onto the CPU, reading only their bytes.

    Args:
        path: The safetensors file (a source with a local path, or that path).
        keys: The keys to return.
        state_dict_path: Must be ``""``.

    Returns:
        Key -> CPU tensor, in the order of ``keys``.

    Raises:
        KeyError: A key is not in the file.
        CorruptCheckpointError: safetensors refused the file.
        StateDictKeyError: ``state_dict_path`` is not ``""``.
    """
    _no_state_dict_path(state_dict_path)
    wanted = list(keys)
    local = path.local_path() if isinstance(path, ByteSource) else path
    try:
        with safe_open(str(local), framework="pt", device="cpu") as f:
            require_keys(set(f.keys()), wanted)
            return {k: f.get_tensor(k) for k in wanted}
    except KeyError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError and OS errors
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptCheckpointError(
            f"The safetensors file could not be read ({type(exc).__name__}). Upload the file again."
        ) from None


def read_header(source: ByteSource) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the length of the data section."""
    size = source.size()
    prefix = source.read_at(0, 8)
    if len(prefix) < 8:
        raise CorruptCheckpointError("The safetensors file is shorter than its 8-byte prefix.")
    header_len = int.from_bytes(prefix, "little")
    check_header_length(header_len, cap=MAX_HEADER_BYTES)
    if 8 + header_len > size:
        raise CorruptCheckpointError("The safetensors header is longer than the file (truncated?).")
    raw = source.file.read(header_len)
    # Tensor count capped before parsing, no repeated keys, ranges tile the data section.
    header = parse_header(raw, data_len=size - 8 - header_len)
    return header, size - 8 - header_len


def safetensors_spans(source: ByteSource, *, state_dict_path: str = "") -> dict[str, TensorSpan]:
    """The span of every tensor of a safetensors file, from its header.

    Raises:
        CorruptCheckpointError: A header entry is invalid or has a dtype torch lacks.
        StateDictKeyError: ``state_dict_path`` is not ``""``.
    """
    _no_state_dict_path(state_dict_path)
    header, data_len = read_header(source)
    path = source.local_path()
    start = source.size() - data_len
    spans: dict[str, TensorSpan] = {}
    for key, entry in header.items():
        if key == METADATA_KEY:
            continue
        info = tensor_info(key, entry, data_len)
        begin, end = entry["data_offsets"]
        spans[key] = TensorSpan(path, start + begin, end - begin, info.shape, _dtype(info.dtype))
    return spans


def _no_state_dict_path(state_dict_path: str) -> None:
    if state_dict_path:
        raise StateDictKeyError(
            f"state_dict_path {state_dict_path!r} does not apply to a safetensors file.",
            candidates=[""],
        )


def _dtype(name: str) -> torch.dtype:
    found = getattr(torch, name, None)
    if not isinstance(found, torch.dtype):
        raise CorruptCheckpointError(f"The checkpoint holds a dtype torch cannot read ({name}).")
    return found


def tensor_info(key: str, entry: object, data_len: int) -> TensorInfo:
    """Validate one header entry and turn it into a TensorInfo."""
    if not isinstance(entry, dict):
        raise _bad_entry(key, "is not an object")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(code, str):
        raise _bad_entry(key, "has no dtype")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise _bad_entry(key, "has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise _bad_entry(key, "has invalid data_offsets")
    begin, end = offsets
    if not begin <= end <= data_len:
        raise _bad_entry(key, "points outside the file")
    name, bits = DTYPES.get(code, (f"safetensors:{code}", 0))
    if bits and (math.prod(shape) * bits + 7) // 8 != end - begin:
        raise _bad_entry(key, "has a byte size that does not match its shape and dtype")
    return TensorInfo(key, tuple(shape), name)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_entry(key: str, problem: str) -> CorruptCheckpointError:
    shown = key if len(key) <= 80 else key[:77] + "..."
    return CorruptCheckpointError(f"The safetensors header entry {shown!r} {problem}.")
