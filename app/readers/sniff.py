"""The built-in formats' names, and words for bytes that no reader accepts."""

from __future__ import annotations

import codecs
from enum import StrEnum

from app.errors import UnsupportedFormatError
from app.readers.source import Head


class CheckpointFormat(StrEnum):
    """The formats of the built-in readers (a format registered later names its own)."""

    TORCH_ZIP = "torch_zip"
    TORCH_LEGACY = "torch_legacy"
    SAFETENSORS = "safetensors"


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
    (b"PK\x03\x04", _ZIP_NOT_TORCH),
    (b"PK\x05\x06", _ZIP_NOT_TORCH),
)


def describe_unknown(head: Head) -> str:
    """What bytes that no reader accepts look like ("a PNG image", "a text file"...)."""
    size, head_bytes = head.size, head.data
    if size == 0:
        return "an empty file"
    for magic, what in _KNOWN_MAGICS:
        if head_bytes.startswith(magic):
            return what
    if len(head_bytes) >= 2 and head_bytes[0] == 0x80 and 2 <= head_bytes[1] <= 5:
        return "a plain pickle stream (not written by torch.save)"
    try:
        # An incremental decoder tolerates a character cut at the end of the head.
        text = codecs.getincrementaldecoder("utf-8")().decode(head_bytes, final=False)
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
        detected: What the bytes look like (``describe_unknown``).
        accepted: The accepted formats in words, in the order they are listed.
        formats: The accepted formats' names (``torch_zip``...), for the problem's body.
    """
    listed = ", or ".join([", ".join(accepted[:-1]), accepted[-1]] if accepted[:-1] else accepted)
    return UnsupportedFormatError(
        f"Detected {detected}. Accepted formats: {listed}.",
        detected=detected,
        accepted=formats,
    )
