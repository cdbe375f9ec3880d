"""The torch zip format (``torch.save`` since 1.6): a pickle plus one record per storage.

Recognised by its zip signature and a ``<archive>/data.pkl`` record; TorchScript archives
and exported programs share the signature and are refused. The pickle is loaded on ``meta``
for an index (no tensor bytes read), and the storages' records say where every tensor's
bytes lie, so a merge reads or copies one tensor at a time.

On ``meta`` torch checks no view against its storage, so every span is checked again here
against the record holding its storage, whatever the pickle did to make it: the guard's scan
is the first line, this is the last before bytes are read.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import CorruptCheckpointError, UnsupportedFormatError
from app.formats import (
    TORCH_SAVE_DESCRIPTION,
    TORCHSCRIPT_DETAIL,
    TORCHSCRIPT_DETECTED,
    ZIP_MAGICS,
    CheckpointFormat,
)
from app.readers import torch_pickle
from app.readers.guards.torch_file import guard_torch_file
from app.readers.guards.zip_archive import (
    ZipRecord,
    ZipRecords,
    check_zip,
    fold_name,
    stored_byteorder,
)
from app.readers.lazy import SpanSource, TensorSource, TensorSpan
from app.readers.limits import current_limits
from app.readers.mergeable import check_dense
from app.readers.source import ByteSource, Head
from app.readers.state_dict import find_state_dict
from app.tensors import CheckpointIndex, Safety

if TYPE_CHECKING:
    import torch

FORMAT = CheckpointFormat.TORCH_ZIP


class TorchZipReader:
    """The ``Reader`` of torch zip files."""

    format: str = FORMAT
    description = TORCH_SAVE_DESCRIPTION

    def matches(self, head: Head) -> bool:
        """A zip archive with ``<archive>/data.pkl``; TorchScript and damaged zips raise."""
        if not head.data.startswith(ZIP_MAGICS):
            return False
        return _is_torch_archive(head.source)

    def read_index(
        self, source: ByteSource, *, state_dict_key: str, max_tensors: int
    ) -> CheckpointIndex:
        return torch_pickle.read_index(
            source.local_path(), fmt=FORMAT, state_dict_key=state_dict_key, max_tensors=max_tensors
        )

    @contextmanager
    def open_tensors(self, source: ByteSource, *, state_dict_path: str) -> Iterator[TensorSource]:
        path = source.local_path()
        records = check_zip(path, max_entries=current_limits().max_zip_entries)
        if stored_byteorder(path, records) == sys.byteorder:
            spans = torch_zip_spans(path, state_dict_path=state_dict_path, records=records)
            yield SpanSource(spans)
        else:
            # An other-endian zip has no byte layout to use: read it once, as legacy files.
            yield torch_pickle.loaded_source(path, state_dict_path=state_dict_path)

    def load_tensors(
        self, source: ByteSource, keys: Iterable[str], *, state_dict_path: str
    ) -> dict[str, torch.Tensor]:
        return torch_pickle.load_tensors(
            source.local_path(), keys, fmt=FORMAT, state_dict_path=state_dict_path
        )

    def describe_safety(self, source: ByteSource) -> Safety:
        return guard_torch_file(source.local_path(), fmt=FORMAT)


READER = TorchZipReader()


def _is_torch_archive(source: ByteSource) -> bool:
    """Whether the zip holds ``<archive>/data.pkl``; TorchScript, exported programs and a
    damaged directory raise."""
    source.file.seek(0)
    try:
        with zipfile.ZipFile(source.file) as archive:
            names = archive.namelist()
    except Exception as exc:  # zipfile also raises NotImplementedError, struct.error...
        raise CorruptCheckpointError(
            "The file starts like a zip archive (torch.save format) but its directory "
            "cannot be read; it is probably truncated or damaged. Upload the file again."
        ) from exc
    # Records are "<archive>/<name>"; only the second path component matters here.
    inner = {parts[1] for parts in (n.split("/") for n in names) if len(parts) >= 2}
    if inner & {"constants.pkl", "code", "archive_format", "models"}:
        raise UnsupportedFormatError(TORCHSCRIPT_DETAIL, detected=TORCHSCRIPT_DETECTED)
    return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


def torch_zip_spans(
    path: Path, *, state_dict_path: str = "", records: ZipRecords | None = None
) -> dict[str, TensorSpan]:
    """The span of every tensor of a torch zip file, from its pickle loaded on meta.

    Args:
        path: The checkpoint file.
        state_dict_path: ``CheckpointIndex.state_dict_path`` from ``read_checkpoint``.
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
