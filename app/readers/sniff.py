"""Tell a checkpoint's format from its bytes, never from its file name."""

from __future__ import annotations

import codecs
import os
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from app.errors import CorruptCheckpointError, UnsupportedFormatError
from app.regular_files import open_regular


class CheckpointFormat(StrEnum):
    """The checkpoint formats the readers accept."""

    TORCH_ZIP = "torch_zip"
    TORCH_LEGACY = "torch_legacy"
    SAFETENSORS = "safetensors"


ACCEPTED = (
    "a PyTorch checkpoint written by torch.save (zip or legacy format)",
    "a safetensors file",
)
# torch.save(..., _use_new_zipfile_serialization=False) opens with the pickled magic number
# 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes, STOP); with pickle_protocol=3, 4
# or 5 under that protocol (4 and 5 in a FRAME of its 13 bytes). The readers rewrite
# protocols 3 to 5 for torch's weights_only reader (framing.py).
_MAGIC_NUMBER = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
LEGACY_MAGIC = (
    b"\x80\x02" + _MAGIC_NUMBER,
    b"\x80\x03" + _MAGIC_NUMBER,
    *(
        bytes([0x80, p, 0x95]) + len(_MAGIC_NUMBER).to_bytes(8, "little") + _MAGIC_NUMBER
        for p in (4, 5)
    ),
)
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
TORCHSCRIPT_DETAIL = (
    "TorchScript archives / exported programs are not accepted; "
    "save model.state_dict() with torch.save"
)
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
_HEAD_BYTES = 64


def sniff_format(path: Path) -> CheckpointFormat:
    """Detect the checkpoint format of ``path`` from its leading bytes.

    Args:
        path: The uploaded file.

    Returns:
        The detected format.

    Raises:
        UnsupportedFormatError: The bytes are not an accepted checkpoint format (including
            TorchScript archives and exported programs).
        CorruptCheckpointError: The file starts like a zip archive but its directory is damaged.
        SourceNotRegularError: ``path`` is a FIFO, socket or device (never waited on).

    Example:
        >>> sniff_format(Path("resnet.bin"))  # doctest: +SKIP
        <CheckpointFormat.TORCH_ZIP: 'torch_zip'>
    """
    # The first open of a file any reader makes: a FIFO renamed here after the source was
    # checked must be refused, not waited on.
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HEAD_BYTES)
        if _is_safetensors(head, size):
            return CheckpointFormat.SAFETENSORS
        if head.startswith(LEGACY_MAGIC):
            return CheckpointFormat.TORCH_LEGACY
        if head.startswith(ZIP_MAGICS):
            return _sniff_zip(f)
    raise _unsupported(_describe(head, size))


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return header_len >= 2 and 8 + header_len <= size and head[8:9] == b"{"


def _sniff_zip(file: BinaryIO) -> CheckpointFormat:
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except Exception as exc:  # zipfile also raises NotImplementedError, struct.error...
        raise CorruptCheckpointError(
            "The file starts like a zip archive (torch.save format) but its directory "
            "cannot be read; it is probably truncated or damaged. Upload the file again."
        ) from exc
    # Records are "<archive>/<name>"; only the second path component matters here.
    inner = {parts[1] for parts in (n.split("/") for n in names) if len(parts) >= 2}
    if inner & {"constants.pkl", "code", "archive_format", "models"}:
        raise UnsupportedFormatError(TORCHSCRIPT_DETAIL, detected="torchscript_or_exported_program")
    if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
        return CheckpointFormat.TORCH_ZIP
    raise _unsupported("a zip archive without '<archive>/data.pkl' (not written by torch.save)")


def _describe(head: bytes, size: int) -> str:
    if size == 0:
        return "an empty file"
    for magic, what in _KNOWN_MAGICS:
        if head.startswith(magic):
            return what
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a plain pickle stream (not written by torch.save)"
    try:
        # An incremental decoder tolerates a character cut at the end of the head.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unrecognised binary data"
    if all(ch.isprintable() or ch.isspace() for ch in text):
        return "a text file"
    return "unrecognised binary data"


def _unsupported(detected: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"Detected {detected}. Accepted formats: {ACCEPTED[0]}, or {ACCEPTED[1]}.",
        detected=detected,
        accepted=[fmt.value for fmt in CheckpointFormat],
    )
