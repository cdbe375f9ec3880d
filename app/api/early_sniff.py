"""Refuse an upload whose first bytes are certainly no checkpoint, while it is still arriving.

The readers sniff a whole stored file (``app.readers.sniff``), but a text file or a TorchScript
archive should be refused in milliseconds, not after a multi-GB upload. This module looks at the
head of the file part only and refuses just what no reader could accept; anything that may be a
checkpoint passes, and the readers decide at the end as before.

It repeats the readers' leading-byte rules on purpose: ``app.readers`` imports torch when its
package loads, and the web process must not.
"""

from __future__ import annotations

import codecs

from app.errors import UnsupportedFormatError

# Enough for a zip's first local header and its name (torch names are short).
HEAD_BYTES = 4096

_ZIP_ENTRY = b"PK\x03\x04"
_ZIP_EMPTY = b"PK\x05\x06"
_ZIP_HEADER_BYTES = 30
# torch.save writes "<archive>/data.pkl" first; torch.jit.save and torch.export.save write
# their tensors ("<archive>/data/0") or extra files first, and these names are theirs alone.
_NOT_TORCH_SAVE_FIRST = frozenset({"data", "extra", "code", "constants.pkl", "models"})
_TORCHSCRIPT_DETAIL = (
    "TorchScript archives / exported programs are not accepted; "
    "save model.state_dict() with torch.save"
)
_TORCHSCRIPT = "torchscript_or_exported_program"
_ACCEPTED = (
    "a PyTorch checkpoint written by torch.save (zip or legacy format), or a safetensors file"
)
_ACCEPTED_FORMATS = ["torch_zip", "torch_legacy", "safetensors"]
_KNOWN_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"GGUF", "a GGUF file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)


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
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return  # a pickle: legacy torch.save, or a plain pickle the readers tell apart
    if _may_be_safetensors(head):
        return
    detected = _describe(head)
    raise UnsupportedFormatError(
        f"Detected {detected}. Accepted formats: {_ACCEPTED}.",
        detected=detected,
        accepted=_ACCEPTED_FORMATS,
    )


def _may_be_safetensors(head: bytes) -> bool:
    # The readers also check that the header fits the file, known only at the end.
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return header_len >= 2 and head[8:9] == b"{"


def _refuse_torchscript_zip(head: bytes) -> None:
    if len(head) < _ZIP_HEADER_BYTES:
        return
    name_len = int.from_bytes(head[26:28], "little")
    name = head[_ZIP_HEADER_BYTES : _ZIP_HEADER_BYTES + name_len]
    parts = name.decode("utf-8", "replace").split("/")
    if len(name) == name_len and len(parts) >= 2 and parts[1] in _NOT_TORCH_SAVE_FIRST:
        raise UnsupportedFormatError(_TORCHSCRIPT_DETAIL, detected=_TORCHSCRIPT)


def _describe(head: bytes) -> str:
    if not head:
        return "an empty file"
    for magic, what in _KNOWN_MAGICS:
        if head.startswith(magic):
            return what
    try:
        # An incremental decoder tolerates a character cut at the end of the head.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unrecognised binary data"
    if all(ch.isprintable() or ch.isspace() for ch in text):
        return "a text file"
    return "unrecognised binary data"
