"""Tensor by tensor access to a checkpoint: where each tensor's bytes lie, read one at a time.

A merge of a multi-gigabyte file must not hold the file in memory. safetensors headers and
the pickle of a torch zip file (loaded on ``meta``, which records each storage's offset in
the file) say where every tensor's bytes are, so a tensor is read with one positioned read,
or copied file-to-file by the kernel without passing through this process at all. Legacy
torch files have no such layout and are read whole, once.

On ``meta`` torch checks no view against its storage, so every torch zip span is checked
again here against the record holding its storage, whatever the pickle did to make it: the
guard's scan is the first line, this is the last before bytes are read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import torch

from app.errors import CorruptCheckpointError, StateDictKeyError
from app.readers import safetensors_reader, torch_pickle
from app.readers.limits import current_limits
from app.readers.mergeable import check_dense
from app.readers.sniff import CheckpointFormat, sniff_format
from app.readers.state_dict import find_state_dict, require_keys
from app.readers.zip_guard import ZipRecord, ZipRecords, check_zip, fold_name, stored_byteorder

_COPY_CHUNK = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TensorSpan:
    """Where a tensor's bytes lie in a file (little-endian, as both formats store them).

    Attributes:
        path: The file.
        offset: Absolute byte offset of the bytes to read.
        nbytes: How many bytes to read.
        shape: The tensor's shape.
        dtype: The torch dtype.
        strides: None when the bytes are the tensor, contiguous; else the view's strides
            over the bytes read (a torch storage shared by several tensors).
        element_offset: The view's storage offset, in elements, when ``strides`` is set.
    """

    path: Path
    offset: int
    nbytes: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    strides: tuple[int, ...] | None = None
    element_offset: int = 0

    @property
    def contiguous(self) -> bool:
        """True when the bytes read are exactly the tensor (a raw copy is possible)."""
        return self.strides is None


class TensorSource(Protocol):
    """Tensors of one checkpoint, available one at a time."""

    def keys(self) -> list[str]:
        """The state_dict keys, in file order."""
        ...

    def span(self, key: str) -> TensorSpan | None:
        """Where ``key``'s bytes lie, or None when the tensor is only available in memory."""
        ...

    def read(self, key: str) -> torch.Tensor:
        """``key`` as a CPU tensor of its own (reads only its bytes when a span is known)."""
        ...


class SpanSource:
    """A TensorSource over byte spans (safetensors, torch zip), plus in-memory fallbacks."""

    def __init__(
        self,
        spans: Mapping[str, TensorSpan],
        loaded: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self._spans = dict(spans)
        self._loaded = dict(loaded or {})
        self._order = [*self._spans, *(k for k in self._loaded if k not in self._spans)]

    def keys(self) -> list[str]:
        return list(self._order)

    def span(self, key: str) -> TensorSpan | None:
        require_keys(self._order, [key])
        return self._spans.get(key)

    def read(self, key: str) -> torch.Tensor:
        found = self.span(key)
        return read_span(found) if found is not None else self._loaded[key]


def read_span(span: TensorSpan) -> torch.Tensor:
    """Read one tensor's bytes with a positioned read into a fresh CPU tensor.

    Raises:
        CorruptCheckpointError: The file ends before the span does.
    """
    buffer = bytearray(span.nbytes)
    with span.path.open("rb") as f:
        f.seek(span.offset)
        got = f.readinto(buffer)
    if got != span.nbytes:
        raise CorruptCheckpointError("The checkpoint ends inside a tensor (truncated?).")
    if span.nbytes == 0:
        flat = torch.empty(0, dtype=span.dtype)
    else:
        flat = torch.frombuffer(buffer, dtype=span.dtype)
    if span.strides is None:
        return flat.reshape(span.shape)
    return flat.as_strided(span.shape, span.strides, span.element_offset).clone()


def copy_span(span: TensorSpan, out: BinaryIO) -> None:
    """Append a contiguous span's bytes to ``out``, file to file inside the kernel if it can.

    Raises:
        CorruptCheckpointError: The file ends before the span does.
    """
    out.flush()
    with span.path.open("rb") as src:
        remaining, position = span.nbytes, span.offset
        while remaining:
            step = min(remaining, _COPY_CHUNK)
            copied = _kernel_copy(src, out, position, step)
            if copied <= 0:
                raise CorruptCheckpointError("The checkpoint ends inside a tensor (truncated?).")
            remaining -= copied
            position += copied


def _kernel_copy(src: BinaryIO, out: BinaryIO, position: int, count: int) -> int:
    if sys.platform.startswith("linux"):
        try:
            return os.copy_file_range(src.fileno(), out.fileno(), count, position)
        except OSError:
            pass  # e.g. across filesystems on old kernels: copy through user space
    src.seek(position)
    data = src.read(count)
    out.write(data)
    out.flush()
    return len(data)


@contextmanager
def open_tensors(path: Path, *, state_dict_path: str = "") -> Iterator[TensorSource]:
    """Open a checkpoint file for tensor by tensor reading.

    Args:
        path: The checkpoint file (safetensors, torch zip or legacy).
        state_dict_path: ``CheckpointIndex.state_dict_path`` from ``read_checkpoint``.

    Yields:
        The tensor source; spans are known for safetensors and torch zip files.

    Raises:
        UnsupportedFormatError, CorruptCheckpointError, UnsafeCheckpointError,
        StateDictKeyError: As for ``read_checkpoint``.

    Example:
        >>> with open_tensors(Path("upload.bin")) as source:  # doctest: +SKIP
        ...     source.read("fc.weight").shape
        torch.Size([1000, 512])
    """
    fmt = sniff_format(path)
    records = None
    if fmt is CheckpointFormat.TORCH_ZIP:
        records = check_zip(path, max_entries=current_limits().max_zip_entries)
    if fmt is CheckpointFormat.SAFETENSORS:
        yield SpanSource(safetensors_spans(path, state_dict_path=state_dict_path))
    elif records is not None and stored_byteorder(path, records) == sys.byteorder:
        yield SpanSource(torch_zip_spans(path, state_dict_path=state_dict_path, records=records))
    else:
        # Legacy files (and other-endian zips) have no byte layout to use: read them once.
        obj, _safety = torch_pickle.load_guarded(path, map_location="cpu", mmap=False)
        yield SpanSource({}, find_state_dict(obj, state_dict_key=state_dict_path).tensors)


def safetensors_spans(path: Path, *, state_dict_path: str = "") -> dict[str, TensorSpan]:
    """The span of every tensor of a safetensors file, from its header.

    Raises:
        CorruptCheckpointError: A header entry is invalid or has a dtype torch lacks.
        StateDictKeyError: ``state_dict_path`` is not ``""``.
    """
    if state_dict_path:
        raise StateDictKeyError(
            f"state_dict_path {state_dict_path!r} does not apply to a safetensors file.",
            candidates=[""],
        )
    header, data_len = safetensors_reader.read_header(path)
    start = path.stat().st_size - data_len
    spans: dict[str, TensorSpan] = {}
    for key, entry in header.items():
        if key == safetensors_reader.METADATA_KEY:
            continue
        info = safetensors_reader.tensor_info(key, entry, data_len)
        begin, end = entry["data_offsets"]
        spans[key] = TensorSpan(path, start + begin, end - begin, info.shape, _dtype(info.dtype))
    return spans


def torch_zip_spans(
    path: Path, *, state_dict_path: str = "", records: ZipRecords | None = None
) -> dict[str, TensorSpan]:
    """The span of every tensor of a torch zip file, from its pickle loaded on meta.

    Args:
        path: The checkpoint file.
        state_dict_path: As for ``open_tensors``.
        records: The archive's records from ``check_zip`` (checked again when not given).

    Raises:
        CorruptCheckpointError, UnsafeCheckpointError, StateDictKeyError: As for
            ``read_checkpoint``; CorruptCheckpointError also when offsets are not recorded
            or a span is not inside the record of its storage.
    """
    obj, _safety = torch_pickle.load_guarded(path, map_location="meta", mmap=False)
    if records is None:
        records = check_zip(path, max_entries=current_limits().max_zip_entries)
    # Where each storage record's bytes start: torch records that as _checkpoint_offset.
    folder = fold_name(f"{records.prefix}/data/")
    starts = {r.data_offset: r for n, r in records.items() if fold_name(n).startswith(folder)}
    tensors = find_state_dict(obj, state_dict_key=state_dict_path).tensors
    check_dense(tensors, loaded_on_meta=True)  # a sparse tensor has no storage to find
    return {key: _zip_span(path, t, starts) for key, t in tensors.items()}


def _zip_span(path: Path, tensor: torch.Tensor, starts: dict[int, ZipRecord]) -> TensorSpan:
    """The bytes of ``tensor`` in the file, inside the record of its storage or refused."""
    base = getattr(tensor.untyped_storage(), "_checkpoint_offset", None)
    record = starts.get(base) if isinstance(base, int) else None
    if record is None:
        raise CorruptCheckpointError("The checkpoint's storage offsets could not be read.")
    itemsize = tensor.element_size()
    shape, strides = tuple(tensor.shape), tuple(int(s) for s in tensor.stride())
    element_offset = int(tensor.storage_offset())
    last = element_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    end = 0 if 0 in shape else (last + 1) * itemsize  # bytes from the record's start
    if element_offset < 0 or min(strides, default=0) < 0 or end > record.size:
        raise CorruptCheckpointError(
            "A tensor of the checkpoint reaches outside the record of its storage."
        )
    start = record.data_offset  # == base
    if tensor.is_contiguous():
        offset = start + element_offset * itemsize
        return TensorSpan(path, offset, tensor.numel() * itemsize, shape, tensor.dtype)
    return TensorSpan(
        path, start, end, shape, tensor.dtype, strides=strides, element_offset=element_offset
    )


def _dtype(name: str) -> torch.dtype:
    found = getattr(torch, name, None)
    if not isinstance(found, torch.dtype):
        raise CorruptCheckpointError(f"The checkpoint holds a dtype torch cannot read ({name}).")
    return found
