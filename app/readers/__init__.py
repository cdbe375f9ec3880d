"""Checkpoint readers: a file becomes a CheckpointIndex; selected tensors load for a merge."""

from app.readers.checkpoint import load_tensors, read_checkpoint
from app.readers.sniff import CheckpointFormat, sniff_format
from app.readers.state_dict import PREFERRED_KEYS

__all__ = [
    "PREFERRED_KEYS",
    "CheckpointFormat",
    "load_tensors",
    "read_checkpoint",
    "sniff_format",
]
