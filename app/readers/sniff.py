"""The built-in formats' names, and words for bytes that no reader accepts.

Both live in ``app.formats`` (importable without torch, for the web process's early sniff);
this module gives the readers their view of them.
"""

from __future__ import annotations

from app.formats import CheckpointFormat, describe_bytes, unsupported_error
from app.readers.source import Head

__all__ = ["CheckpointFormat", "describe_unknown", "unsupported_error"]


def describe_unknown(head: Head) -> str:
    """What bytes that no reader accepts look like ("a PNG image", "a text file"...)."""
    return describe_bytes(head.data, size=head.size)
