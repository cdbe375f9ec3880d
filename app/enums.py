"""The engine's vocabulary: verdicts, reasons, module statuses and transform kinds.

Matching decides these and the wire schemas (``app.schemas``) publish them; they live here,
in a core module with no pydantic and no torch, so matching imports neither. ``app.schemas``
re-exports them for the API and for clients.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

REPORT_SCHEMA_VERSION: Literal["1"] = "1"
"""The report's schema version; it changes only with breaking changes."""


class Verdict(StrEnum):
    """The one-word answer; see ``app.matching.verdict`` for the rules."""

    COMPATIBLE = "compatible"
    COMPATIBLE_WITH_CHANGES = "compatible_with_changes"
    PARTIAL = "partial"
    INCOMPATIBLE = "incompatible"


class Reason(StrEnum):
    """Why a key does not load as it is; see ``app.matching.reasons`` for the rules."""

    HEAD_RESIZED = "head_resized"
    INPUT_CHANNELS = "input_channels"
    POSITION_EMBEDDING_RESIZED = "position_embedding_resized"
    TRANSPOSED = "transposed"
    RESHAPED = "reshaped"
    DTYPE_CAST = "dtype_cast"
    IGNORABLE = "ignorable"
    NEW_MODULE = "new_module"
    DEPTH_CHANGED = "depth_changed"
    RENAMED = "renamed"
    QUANTIZED = "quantized"
    ADAPTER = "adapter"
    PARTITIONED = "partitioned"
    UNEXPLAINED = "unexplained"


class ModuleStatus(StrEnum):
    LOADED = "loaded"
    PARTIAL = "partial"
    NOT_LOADED = "not_loaded"
    CHECKPOINT_ONLY = "checkpoint_only"


class TransformKind(StrEnum):
    STRIP_PREFIX = "strip_prefix"
    ADD_PREFIX = "add_prefix"
    RENAME = "rename"
    MATCH_BY_SUFFIX = "match_by_suffix"
    KEY_MAP = "key_map"
    LEAF_SYNONYM = "leaf_synonym"
    CONVERSION = "conversion"
