"""The legacy torch format (``torch.save`` before 1.6, or ``_use_new_zipfile_serialization=False``).

Five pickles back to back, then the storages' bytes: there is no layout to read one tensor
from, so an index reads the file once (on ``meta``) and a merge loads it whole, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from app.formats import TORCH_SAVE_DESCRIPTION, CheckpointFormat
from app.readers import torch_pickle
from app.readers.guards.torch_file import guard_torch_file
from app.readers.lazy import TensorSource
from app.readers.source import ByteSource, Head
from app.tensors import CheckpointIndex, Safety

if TYPE_CHECKING:
    import torch

# The pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes, STOP);
# with pickle_protocol=3, 4 or 5 under that protocol (4 and 5 in a FRAME of its 13 bytes).
# The readers rewrite protocols 3 to 5 for torch's weights_only reader (framing.py).
_MAGIC_NUMBER = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
LEGACY_MAGIC = (
    b"\x80\x02" + _MAGIC_NUMBER,
    b"\x80\x03" + _MAGIC_NUMBER,
    *(
        bytes([0x80, p, 0x95]) + len(_MAGIC_NUMBER).to_bytes(8, "little") + _MAGIC_NUMBER
        for p in (4, 5)
    ),
)
LEGACY_NOTE = (
    "The file uses the legacy torch.save format, which cannot be read lazily: every byte was "
    "read once (re-save it with torch.save or as safetensors for header-only checks)."
)
FORMAT = CheckpointFormat.TORCH_LEGACY


class TorchLegacyReader:
    """The ``Reader`` of legacy torch files."""

    format: str = FORMAT
    description = TORCH_SAVE_DESCRIPTION

    def matches(self, head: Head) -> bool:
        """The pickled magic number torch.save writes first."""
        return head.data.startswith(LEGACY_MAGIC)

    def read_index(
        self, source: ByteSource, *, state_dict_key: str, max_tensors: int
    ) -> CheckpointIndex:
        found = torch_pickle.read_index(
            source.local_path(), fmt=FORMAT, state_dict_key=state_dict_key, max_tensors=max_tensors
        )
        return replace(found, notes=(*found.notes, LEGACY_NOTE))

    @contextmanager
    def open_tensors(self, source: ByteSource, *, state_dict_path: str) -> Iterator[TensorSource]:
        yield torch_pickle.loaded_source(source.local_path(), state_dict_path=state_dict_path)

    def load_tensors(
        self, source: ByteSource, keys: Iterable[str], *, state_dict_path: str
    ) -> dict[str, torch.Tensor]:
        return torch_pickle.load_tensors(
            source.local_path(), keys, fmt=FORMAT, state_dict_path=state_dict_path
        )

    def describe_safety(self, source: ByteSource) -> Safety:
        return guard_torch_file(source.local_path(), fmt=FORMAT)


READER = TorchLegacyReader()
