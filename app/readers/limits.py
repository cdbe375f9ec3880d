"""Limits every reader enforces on hostile uploads."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from app.errors import CorruptCheckpointError, LimitExceededError, NoTensorsError
from app.tensors import CheckpointIndex

MAX_TENSORS_DEFAULT = 100_000


def check_tensor_count(count: int, *, max_tensors: int) -> None:
    """Raise when a state_dict holds more tensors than allowed.

    Args:
        count: The number of tensors found.
        max_tensors: The limit.

    Raises:
        LimitExceededError: ``count`` is above ``max_tensors``.
    """
    if count > max_tensors:
        raise LimitExceededError(
            f"The state_dict holds {count} tensors, more than the limit max_tensors={max_tensors}.",
            limit="max_tensors",
            limit_value=max_tensors,
        )


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """The limits the readers' guards enforce before (and after) a file reaches torch.

    Attributes:
        max_tensors: Most tensors one file may list (safetensors entries, counted before
            the header is parsed).
        max_pickle_bytes: Largest pickle stream scanned and unpickled (bytes).
        max_header_bytes: Largest safetensors JSON header (bytes).
        max_zip_entries: Most entries a torch zip archive may hold.
        max_depth: Deepest nesting of containers inside a pickle (levels).
        max_pickle_nodes: Most values a pickle may expand to, counting every shared
            reference again (values); a memo bomb expands exponentially.
        max_key_length: Longest state_dict key (characters).
    """

    max_tensors: int = MAX_TENSORS_DEFAULT
    max_pickle_bytes: int = 64 * 1024**2
    max_header_bytes: int = 32 * 1024**2
    max_zip_entries: int = 300_000
    max_depth: int = 64
    max_pickle_nodes: int = 20_000_000
    max_key_length: int = 1024


_current = ReadLimits()


def current_limits() -> ReadLimits:
    """The limits of this process (set once per worker from the settings)."""
    return _current


def set_limits(limits: ReadLimits) -> ReadLimits:
    """Replace the limits of this process; returns the previous ones (for tests)."""
    global _current
    previous, _current = _current, limits
    return previous


def limit_error(what: str, *, limit: str, value: int) -> LimitExceededError:
    """A LimitExceededError naming the setting (``CKPT_COMPAT_<LIMIT>``) and its value."""
    return LimitExceededError.for_setting(what, limit=limit, value=value)


def check_keys(checkpoint: CheckpointIndex, *, limits: ReadLimits | None = None) -> CheckpointIndex:
    """Refuse an index without tensors, and keys that are too long or hide characters.

    Every key is echoed in the report and the merged file; a megabyte key would bloat both.

    Returns:
        ``checkpoint`` unchanged.

    Raises:
        NoTensorsError: The chosen state_dict has no string-keyed tensors.
        LimitExceededError: A key or a candidate path is longer than ``max_key_length``.
        CorruptCheckpointError: A key holds control or format (invisible) characters.
    """
    if not checkpoint.index.tensors:
        raise NoTensorsError(
            "The chosen state_dict holds no tensors under string keys (non-string keys are "
            "skipped). Save model.state_dict() with torch.save."
        )
    limit = (limits or current_limits()).max_key_length
    indexes = [checkpoint.index, *checkpoint.candidate_indexes.values()]
    longest = max(
        (len(key) for index in indexes for key in index.tensors),
        default=0,
    )
    longest = max(
        [longest, len(checkpoint.state_dict_path)] + [len(c.path) for c in checkpoint.candidates]
    )
    if longest > limit:
        raise limit_error(
            f"A state_dict key is {longest} characters long.", limit="max_key_length", value=limit
        )
    for index in indexes:
        for key in index.tensors:
            if any(unicodedata.category(ch) in _HIDDEN for ch in key):
                raise CorruptCheckpointError(
                    f"A state_dict key holds control or invisible characters ({key[:60]!a}); "
                    "they could rewrite a terminal or hide text in a report."
                )
    return checkpoint


# Control (Cc: ESC, newline...) and format (Cf: bidi overrides, zero-width) characters.
_HIDDEN = frozenset({"Cc", "Cf"})
