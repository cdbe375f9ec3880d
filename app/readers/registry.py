"""The one registration point of checkpoint formats, and reading one file by its bytes' format.

``app/readers/__init__.py`` registers every format with one line; a format is chosen by its
bytes, never by the file name: the first registered reader whose ``matches(head)`` is true.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from app.readers.lazy import TensorSource
from app.readers.limits import check_keys
from app.readers.protocol import Reader
from app.readers.sniff import describe_unknown, unsupported_error
from app.readers.source import ByteSource, open_source, read_head
from app.tensors import CheckpointIndex, Safety

if TYPE_CHECKING:
    import torch

_readers: list[Reader] = []


def register_reader(reader: Reader) -> Reader:
    """Accept files of ``reader.format`` from now on (tried after those registered before).

    Returns:
        ``reader``, so a format module may register itself at its end.

    Raises:
        ValueError: A reader of that format is registered already.

    Example:
        >>> register_reader(torch_zip.READER)  # doctest: +SKIP
    """
    if any(r.format == reader.format for r in _readers):
        raise ValueError(f"A reader of the format {reader.format!r} is registered already.")
    _readers.append(reader)
    return reader


def unregister_reader(format: str) -> None:
    """Stop accepting ``format`` (for tests that register a format of their own)."""
    _readers[:] = [r for r in _readers if r.format != format]


def readers() -> tuple[Reader, ...]:
    """The registered readers, in the order their formats are tried."""
    return tuple(_readers)


def identify(source: ByteSource) -> Reader:
    """The reader of ``source``'s format, from its bytes.

    Raises:
        UnsupportedFormatError: No registered format matches (the problem says what the
            bytes look like and lists the accepted formats).
        CorruptCheckpointError: A format recognised its bytes as damaged.
    """
    head = read_head(source)
    for reader in _readers:
        if reader.matches(head):
            return reader
    descriptions = list(dict.fromkeys(r.description for r in _readers))
    formats = [r.format for r in _readers]
    raise unsupported_error(describe_unknown(head), accepted=descriptions, formats=formats)


def index_file(path: Path, *, state_dict_key: str, max_tensors: int) -> CheckpointIndex:
    """Index one checkpoint file by the reader its bytes select (keys checked)."""
    with open_source(path) as source:
        reader = identify(source)
        found = reader.read_index(source, state_dict_key=state_dict_key, max_tensors=max_tensors)
    return check_keys(found)


def load_file_tensors(
    path: Path, keys: Iterable[str], *, state_dict_path: str
) -> dict[str, torch.Tensor]:
    """Load selected tensors of one checkpoint file onto the CPU."""
    with open_source(path) as source:
        return identify(source).load_tensors(source, keys, state_dict_path=state_dict_path)


@contextmanager
def open_file_tensors(path: Path, *, state_dict_path: str) -> Iterator[TensorSource]:
    """Open one checkpoint file to read its tensors one at a time (spans reopen this file)."""
    with open_source(path) as source:
        reader = identify(source)
        with reader.open_tensors(source, state_dict_path=state_dict_path) as tensors:
            yield tensors


def describe_file_safety(path: Path) -> Safety:
    """The safety listing of one checkpoint file."""
    with open_source(path) as source:
        return identify(source).describe_safety(source)


def sniff_file(path: Path) -> str:
    """The format of one checkpoint file, from its bytes (``Reader.format``)."""
    with open_source(path) as source:
        return identify(source).format
