"""What the accepted checkpoint formats look like from their first bytes, without torch.

Two places judge a file by its head: the readers (``app.readers``), on a stored file, and the
web process (``app.api.early_sniff``), on an upload still arriving. The web process must not
import torch, which ``app.readers`` does when its package loads, so the formats' names, the
words for bytes no reader accepts and the problem that says so live here, once, for both.
"""

from __future__ import annotations

import codecs
from enum import StrEnum

from app.errors import UnsupportedFormatError


class CheckpointFormat(StrEnum):
    """The formats of the built-in readers (a format registered later names its own)."""

    TORCH_ZIP = "torch_zip"
    TORCH_LEGACY = "torch_legacy"
    SAFETENSORS = "safetensors"


TORCH_SAVE_DESCRIPTION = "a PyTorch checkpoint written by torch.save (zip or legacy format)"
SAFETENSORS_DESCRIPTION = "a safetensors file"
# The built-in readers in the order a problem lists them (``torch_zip`` and ``torch_legacy``
# share one description, listed once).
BUILT_IN_DESCRIPTIONS = (TORCH_SAVE_DESCRIPTION, SAFETENSORS_DESCRIPTION)

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
TORCHSCRIPT_DETECTED = "torchscript_or_exported_program"
TORCHSCRIPT_DETAIL = (
    "TorchScript archives / exported programs are not accepted; "
    "save model.state_dict() with torch.save"
)

_ZIP_NOT_TORCH = "a zip archive without '<archive>/data.pkl' (not written by torch.save)"
_KNOWN_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"GGUF", "a GGUF file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    # A zip the torch zip reader did not take (a damaged or TorchScript one raised there).
    *((magic, _ZIP_NOT_TORCH) for magic in ZIP_MAGICS),
)


def starts_like_pickle(head: bytes) -> bool:
    """Whether ``head`` starts with a pickle ``PROTO`` opcode of protocol 2 to 5."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def safetensors_header_length(head: bytes) -> int | None:
    """The header length a safetensors file starting with ``head`` declares, or None when the
    head cannot start one (a little-endian u64, then the header's ``{``)."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    header_len = int.from_bytes(head[:8], "little")
    return header_len if header_len >= 2 else None


def describe_bytes(head: bytes, *, size: int | None = None) -> str:
    """What bytes that no reader accepts look like ("a PNG image", "a text file"...).

    Args:
        head: The first bytes of the file (all of a short one).
        size: The file's size when known; an upload still arriving has none yet.

    Example:
        >>> describe_bytes(b"%PDF-1.7")
        'a PDF document'
    """
    if size == 0 or not head:
        return "an empty file"
    for magic, what in _KNOWN_MAGICS:
        if head.startswith(magic):
            return what
    if starts_like_pickle(head):
        return "a plain pickle stream (not written by torch.save)"
    try:
        # An incremental decoder tolerates a character cut at the end of the head.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unrecognised binary data"
    if all(ch.isprintable() or ch.isspace() for ch in text):
        return "a text file"
    return "unrecognised binary data"


def unsupported_error(
    detected: str, *, accepted: list[str], formats: list[str]
) -> UnsupportedFormatError:
    """The problem for bytes no reader accepts.

    Args:
        detected: What the bytes look like (``describe_bytes``).
        accepted: The accepted formats in words, in the order they are listed.
        formats: The accepted formats' names (``torch_zip``...), for the problem's body.
    """
    listed = ", or ".join([", ".join(accepted[:-1]), accepted[-1]] if accepted[:-1] else accepted)
    return UnsupportedFormatError(
        f"Detected {detected}. Accepted formats: {listed}.",
        detected=detected,
        accepted=formats,
    )
