"""Check options: what a caller may ask of a check; unknown fields are refused."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.callbacks.hosts import url_host
from app.patterns import MAX_PATTERN_CHARS, MAX_PATTERNS, check_replacement, compile_pattern
from app.schemas.base import Wire

MAX_KEY_MAP = 4096
"""The most entries of ``key_map`` (``app.matching.refine.MAX_KEY_MAP`` suggests no more)."""

MAX_KEY_CHARS = 1024
"""The longest key or target name in ``key_map`` (characters)."""

MAX_OPTION_DEPTH = 32
"""Deepest nesting of lists and objects in ``architecture_kwargs`` (levels, itself the first)."""

MAX_OPTION_INT_BITS = 64
"""Largest integer magnitude in ``architecture_kwargs`` (bits; 2**64 - 1 passes)."""

Adapter = Literal["transpose", "input_channels", "position_embedding", "qkv", "dequantize"]
"""An opt-in tensor adapter (``app.matching.adapters.ADAPTERS``, in that order)."""


class MergeOptions(Wire):
    """Ask for a merged state_dict and choose its file format."""

    format: Literal["safetensors", "pt"] = "safetensors"


class RenameRule(Wire):
    """One key rename: an RE2 regular expression and its replacement (``\\1``, ``\\g<name>``)."""

    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="RE2 regular expression, searched in each checkpoint key.",
        examples=["^stage(\\d)\\."],
    )
    replacement: str = Field(
        max_length=MAX_PATTERN_CHARS,
        description="Replacement text; \\1 or \\g<name> insert groups.",
        examples=["layer\\1."],
    )

    @model_validator(mode="after")
    def _compiles(self) -> RenameRule:
        check_replacement(self.pattern, self.replacement)  # compiles the pattern too
        return self


class FreezeOptions(Wire):
    """Which parameters the training plan freezes."""

    mode: Literal["loaded", "all", "none"] = Field(
        default="loaded",
        description=(
            "loaded: freeze the parameters the checkpoint fills, train the rest; all: freeze "
            "everything; none: train everything. `trainable` patterns are trained in any mode."
        ),
    )
    trainable: list[str] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="RE2 patterns searched in parameter names; matching parameters are trained.",
        examples=[["^layer4\\.", "^fc\\."]],
    )

    @field_validator("trainable")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_pattern(pattern)
        return patterns


class CheckOptions(Wire):
    """Options of a check; every field is optional and unknown fields are refused.

    Key options apply in this order: ``strip_prefix``, ``add_prefix``, ``rename`` (rules in
    order), ``match_by_suffix``. When any of them is given, automatic alignment does not run:
    explicit options win over ``align``.
    """

    architecture_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description='Keyword arguments for the architecture constructor, e.g. {"num_classes": 10}.',
    )

    @field_validator("architecture_kwargs")
    @classmethod
    def _json_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Values that parse but cannot be stored or answered as JSON (each was a 500): NaN
        # and infinities, nesting past the serialiser's depth limit, integers past Python's
        # int-to-str limit (4300 digits). No constructor argument needs any of them.
        pending: list[tuple[Any, int]] = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("NaN and infinite numbers are not allowed")
            if isinstance(item, int) and item.bit_length() > MAX_OPTION_INT_BITS:
                raise ValueError(f"integers are too large (at most {MAX_OPTION_INT_BITS} bits)")
            if isinstance(item, dict | list):
                if depth > MAX_OPTION_DEPTH:
                    raise ValueError(f"architecture_kwargs nests deeper than {MAX_OPTION_DEPTH}")
                children = item.values() if isinstance(item, dict) else item
                pending.extend((child, depth + 1) for child in children)
        return value

    state_dict_key: str = Field(
        default="auto",
        description='"auto", or a dotted path to the state_dict inside the file\'s dict.',
    )
    merge: MergeOptions | None = Field(
        default=None, description="Write a merged state_dict; null for a report only."
    )
    dtype_policy: Literal["model", "checkpoint"] = Field(
        default="model",
        description="Merged tensors take the model's dtype, or keep the checkpoint's.",
    )
    align: Literal["auto", "none"] = Field(
        default="auto",
        description=(
            "auto: find the prefix transformation that loads the most parameter elements; "
            "none: compare keys as they are. Ignored when an explicit key option is given."
        ),
    )
    strip_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Remove this literal prefix from checkpoint keys that start with it.",
        examples=["module."],
    )
    add_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Prepend this literal prefix to every checkpoint key (after strip_prefix).",
        examples=["backbone.body."],
    )
    rename: list[RenameRule] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Regular-expression renames of checkpoint keys, applied in order.",
    )
    key_map: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_KEY_MAP,
        description=(
            "Explicit renames: stored checkpoint key -> model key, applied after `rename` "
            "(keys not listed keep their name); what `suggested_options` proposes when a "
            "mapping needs more than prefixes and rename rules."
        ),
        examples=[{"blocks.0.attn.qkv.weight": "encoder.layers.0.attn.in_proj_weight"}],
    )

    @field_validator("key_map")
    @classmethod
    def _bounded_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, target in value.items():
            if not key or not target or len(key) > MAX_KEY_CHARS or len(target) > MAX_KEY_CHARS:
                raise ValueError(f"key_map keys and values are 1 to {MAX_KEY_CHARS} characters")
        return value

    match_by_suffix: bool = Field(
        default=False,
        description=(
            "Map each checkpoint key to the model key with the longest common dotted suffix "
            "and the same shape (detectron2-style); ambiguous keys are reported, not guessed."
        ),
    )
    adapt: list[Adapter] = Field(
        default_factory=list,
        max_length=5,
        description=(
            "Load keys that do not fit as stored by converting them as timm and transformers "
            "do: transpose (GPT-2 Conv1D <-> Linear), input_channels (timm's "
            "adapt_input_conv), position_embedding (timm's resample_abs_pos_embed and "
            "resize_rel_pos_bias_table; text tables truncated or extended by copying), qkv "
            "(fuse or split q/k/v in three equal blocks), dequantize (bitsandbytes LLM.int8 "
            "and FP8 weight_scale_inv block scales into the model's dtype, as bitsandbytes' "
            "int8_vectorwise_dequant and transformers' Fp8Dequantize do). Each adapted key is "
            "in keys.adapted."
        ),
        examples=[["input_channels", "position_embedding"]],
    )

    @field_validator("adapt")
    @classmethod
    def _distinct(cls, value: list[Adapter]) -> list[Adapter]:
        # One order for one meaning: the list is part of what makes two checks the same.
        order = ["transpose", "input_channels", "position_embedding", "qkv", "dequantize"]
        return sorted(set(value), key=order.index)

    freeze: FreezeOptions | None = Field(
        default=None,
        description=(
            "The training plan's freezing; null proposes the default: train what the "
            "checkpoint does not fill (plus `trainable`), freeze the rest."
        ),
    )

    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "POST the check here when it finishes (succeeded or failed), signed the Standard "
            "Webhooks way; the host must be in CKPT_COMPAT_CALLBACK_HOSTS. Not part of what "
            "makes two checks the same for result reuse."
        ),
        examples=["https://registry.internal/hooks/ckpt-compat"],
    )

    @field_validator("callback_url")
    @classmethod
    def _absolute_http(cls, value: str | None) -> str | None:
        if value is not None:
            url_host(value)  # ValueError: says what is wrong
        return value

    @property
    def explicit_key_options(self) -> bool:
        """Whether any explicit key option is set (then automatic alignment does not run)."""
        return bool(
            self.strip_prefix
            or self.add_prefix
            or self.rename
            or self.match_by_suffix
            or self.key_map
        )
