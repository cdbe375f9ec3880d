"""Tensor by tensor access to a checkpoint: where each tensor's bytes lie, read one at a time.

A merge of a multi-gigabyte file must not hold the file in memory. safetensors headers and
the pickle of a torch zip file (loaded on ``meta``, which records each storage's offset in
the file) say where every tensor's bytes are, so a tensor is read with one positioned read,
or copied file-to-file by the kernel without passing through this process at all. Legacy
torch files have no such layout and are read whole, once. Each format's reader finds its
spans (``Reader.open_tensors``); this module is what they share.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import torch

from app.errors import CorruptCheckpointError
from app.readers.state_dict import require_keys

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
