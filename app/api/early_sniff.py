"""Refuse an upload whose first bytes are certainly no checkpoint, while it is still arriving.

The readers sniff a whole stored file (``app.readers.sniff``), but a text file or a TorchScript
archive should be refused in milliseconds, not after a multi-GB upload. This module looks at the
head of the file part only and refuses just what no reader could accept; anything that may be a
checkpoint passes, and the readers decide at the end as before.

The formats' leading-byte rules and words come from ``app.formats``, which the readers use
too and which does not import torch (``app.readers`` does when its package loads).
"""

from __future__ import annotations

from app.errors import UnsupportedFormatError
from app.formats import (
    BUILT_IN_DESCRIPTIONS,
    TORCHSCRIPT_DETAIL,
    TORCHSCRIPT_DETECTED,
    ZIP_MAGICS,
    CheckpointFormat,
    describe_bytes,
    safetensors_header_length,
    starts_like_pickle,
    unsupported_error,
)

# Enough for a zip's first local header and its name (torch names are short).
HEAD_BYTES = 4096

_ZIP_ENTRY, _ZIP_EMPTY = ZIP_MAGICS
_ZIP_HEADER_BYTES = 30
# torch.save writes "<archive>/data.pkl" first; torch.jit.save and torch.export.save write
# their tensors ("<archive>/data/0") or extra files first, and these names are theirs alone.
_NOT_TORCH_SAVE_FIRST = frozenset({"data", "extra", "code", "constants.pkl", "models"})


def refuse_unlikely_head(head: bytes) -> None:
    """Raise when ``head`` cannot start any accepted checkpoint.

    Args:
        head: The first ``HEAD_BYTES`` bytes of the file part, or all of a shorter one.

    Raises:
        UnsupportedFormatError: The bytes are text, a known non-checkpoint format, a plain
            pickle, or a zip that TorchScript / ``torch.export`` wrote.

    Example:
        >>> refuse_unlikely_head(b"hello world")  # doctest: +SKIP
        Traceback (most recent call last):
        UnsupportedFormatError: Detected a text file. Accepted formats: ...
    """
    if head.startswith(_ZIP_ENTRY):
        _refuse_torchscript_zip(head)
        return
    if head.startswith(_ZIP_EMPTY):
        return  # the readers word an empty zip
    if starts_like_pickle(head):
        return  # a pickle: legacy torch.save, or a plain pickle the readers tell apart
    if safetensors_header_length(head) is not None:
        return  # the readers also check that the header fits the file, known at the end
    raise unsupported_error(
        describe_bytes(head),
        accepted=list(BUILT_IN_DESCRIPTIONS),
        formats=[str(fmt) for fmt in CheckpointFormat],
    )


def _refuse_torchscript_zip(head: bytes) -> None:
    if len(head) < _ZIP_HEADER_BYTES:
        return
    name_len = int.from_bytes(head[26:28], "little")
    name = head[_ZIP_HEADER_BYTES : _ZIP_HEADER_BYTES + name_len]
    parts = name.decode("utf-8", "replace").split("/")
    if len(name) == name_len and len(parts) >= 2 and parts[1] in _NOT_TORCH_SAVE_FIRST:
        raise UnsupportedFormatError(TORCHSCRIPT_DETAIL, detected=TORCHSCRIPT_DETECTED)
