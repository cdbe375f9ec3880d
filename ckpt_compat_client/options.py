"""The ``options`` field of a check from the command line's flags.

``--options`` is the field itself; ``--kwargs`` becomes its ``architecture_kwargs`` and the
suffix of ``--merge OUT`` its ``merge.format``, so the common cases need no JSON beyond the
kwargs. Everything is checked before a byte is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MERGE_FORMATS = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".bin": "pt"}
"""``--merge OUT``'s suffix -> the merged file's format (.pt, .pth and .bin are torch.save)."""


def check_options(*, kwargs: str | None, options: str | None, merge: Path | None) -> dict[str, Any]:
    """The ``options`` field from the flags: ``--options``, with ``--kwargs`` as its
    ``architecture_kwargs`` and ``--merge``'s suffix as its ``merge.format``.

    Raises:
        ValueError: A flag is not a JSON object, kwargs are given twice, or OUT's suffix
            names no format.
    """
    wire = _json_object(options, "--options") if options else {}
    if kwargs:
        if "architecture_kwargs" in wire:
            raise ValueError("give the kwargs once: --kwargs or architecture_kwargs in --options")
        wire["architecture_kwargs"] = _json_object(kwargs, "--kwargs")
    if merge is not None:
        fmt = MERGE_FORMATS.get(merge.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"--merge {merge}: end the name with .safetensors, or .pt / .pth / .bin"
            )
        given = wire.get("merge")
        wire["merge"] = {**(given if isinstance(given, dict) else {}), "format": fmt}
    return wire


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object ({{...}})")
    return value
