"""Bound and vet a safetensors header before anything lists its tensors.

A 94 MB header of 1.4 million empty tensors took safetensors 11.5 s and 1 GB to list, so
the header's size and its tensor count are capped before the JSON is parsed; the JSON may
not repeat a key; and the tensors' byte ranges must tile the data section exactly, as the
safetensors library itself requires (no overlap, no gap, nothing past the end).
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.errors import CorruptCheckpointError
from app.readers.limits import ReadLimits, current_limits, limit_error

METADATA_KEY = "__metadata__"
_DTYPE_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


def check_header_length(header_len: int, *, cap: int | None = None) -> None:
    """Refuse a declared header length over ``max_header_bytes`` (or ``cap`` when lower)."""
    limit = current_limits().max_header_bytes
    limit = min(limit, cap) if cap is not None else limit
    if header_len > limit:
        raise limit_error(
            f"The safetensors header is {header_len} bytes.", limit="max_header_bytes", value=limit
        )


def parse_header(raw: bytes, *, data_len: int, limits: ReadLimits | None = None) -> dict[str, Any]:
    """Parse and vet the JSON header.

    Args:
        raw: The header bytes.
        data_len: The length of the data section after the header.
        limits: Defaults to this process's limits (``max_tensors`` applies here).

    Returns:
        The header object (tensor entries and ``__metadata__``).

    Raises:
        CorruptCheckpointError: Invalid JSON, a repeated key, overlapping or gapped ranges.
        LimitExceededError: More entries than ``max_tensors``.
    """
    limits = limits or current_limits()
    # Every tensor entry names "data_offsets": an upper bound read without parsing.
    if raw.count(b'"data_offsets"') > limits.max_tensors:
        raise limit_error(
            "The safetensors header lists more tensors than allowed.",
            limit="max_tensors",
            value=limits.max_tensors,
        )
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CorruptCheckpointError("The safetensors header is not valid JSON.") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError("The safetensors header is not a JSON object.")
    _check_layout(header, data_len)
    _check_dtype_codes(header)
    return header


def _check_dtype_codes(header: dict[str, Any]) -> None:
    """A dtype code missing from our table is kept (safetensors adds codes); garbage is not."""
    for key, entry in header.items():
        code = entry.get("dtype") if isinstance(entry, dict) else None
        if key != METADATA_KEY and isinstance(code, str) and not _DTYPE_CODE.match(code):
            raise CorruptCheckpointError(
                f"The safetensors header gives a tensor the dtype {code[:20]!a}, which is not "
                "a safetensors dtype code."
            )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_layout(header: dict[str, Any], data_len: int) -> None:
    """The byte ranges of the entries, sorted, must tile ``[0, data_len)`` exactly."""
    spans: list[tuple[int, int]] = []
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if key == METADATA_KEY or not isinstance(offsets, list) or len(offsets) != 2:
            continue  # the entry itself is refused later, with its key
        numbers = all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        if numbers and 0 <= offsets[0] <= offsets[1] <= data_len:
            spans.append((offsets[0], offsets[1]))
    expected = 0
    for begin, end in sorted(spans):
        if begin != expected:
            what = "overlap" if begin < expected else "leave a gap between them"
            raise CorruptCheckpointError(f"The safetensors header's tensor byte ranges {what}.")
        expected = max(expected, end)
    if spans and expected != data_len:
        raise CorruptCheckpointError(
            "The safetensors header's tensor byte ranges do not end where the file ends."
        )
