"""The ``Reader`` protocol: the verbs every checkpoint format offers, as safetensors' bindings do.

One module per format implements it (``torch_zip``, ``torch_legacy``, ``safetensors_reader``)
and ``app/readers/__init__.py`` registers each with one line; ``sharded`` is a composite
that reads each shard through the reader its bytes select.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from app.readers.lazy import TensorSource
from app.readers.source import ByteSource, Head
from app.tensors import CheckpointIndex, Safety

if TYPE_CHECKING:
    import torch


class Reader(Protocol):
    """One checkpoint format.

    Attributes:
        format: The format's name as reports give it (``torch_zip``, ``safetensors``).
        description: How an error lists it among the accepted formats ("a safetensors
            file"); formats that share one description are listed once.
    """

    format: str
    description: str

    def matches(self, head: Head) -> bool:
        """Whether these leading bytes are this format's.

        Raises:
            UnsupportedFormatError, CorruptCheckpointError: The bytes belong to this
                format's family but not to a member that is accepted, or are damaged
                (a TorchScript archive, a zip whose directory cannot be read).
        """
        ...

    def read_index(
        self, source: ByteSource, *, state_dict_key: str, max_tensors: int
    ) -> CheckpointIndex:
        """The index of the chosen state_dict, reading no tensor bytes where the format allows."""
        ...

    def open_tensors(
        self, source: ByteSource, *, state_dict_path: str
    ) -> AbstractContextManager[TensorSource]:
        """The tensors one at a time, with their byte spans where the format has them."""
        ...

    def load_tensors(
        self, source: ByteSource, keys: Iterable[str], *, state_dict_path: str
    ) -> dict[str, torch.Tensor]:
        """The given tensors on the CPU, in the order of ``keys``."""
        ...

    def describe_safety(self, source: ByteSource) -> Safety:
        """How safe the file is to load (the guards run as for a load)."""
        ...
