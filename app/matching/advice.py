"""Sentences of ``summary.message`` for tensors stored at another size or in another layout.

One sentence per kind of fix, not per tensor: a Swin has a relative-position table in every
attention block and a ViT a fused ``qkv`` in every block, and twelve sentences that say the
same thing bury the one that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.enums import Reason
from app.matching.adapters import ADAPTERS
from app.matching.compare import ShapeMismatch
from app.matching.reasons import Explanations
from app.matching.shapes import position_kind, resize_text_positions, sequence_cause

MAX_LISTED = 3
"""The most keys named in one sentence before "and N more"."""


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def _sizes(m: ShapeMismatch) -> str:
    return f"{list(m.checkpoint_shape)} -> {list(m.model_shape)}"


def position_sentences(
    mismatches: Sequence[ShapeMismatch], kwargs: Mapping[str, object]
) -> list[str]:
    """One sentence per kind of resized position table: image, relative (Swin), text.

    Example:
        >>> tables = [
        ...     ShapeMismatch(f"layers.{i}.attn.relative_position_bias_table", (169, 3), (225, 3))
        ...     for i in range(4)
        ... ]
        >>> print(position_sentences(tables, {})[0])  # doctest: +NORMALIZE_WHITESPACE
        The relative-position tables of 4 attention blocks changed size ([169, 3] -> [225, 3],
        e.g. layers.0.attn.relative_position_bias_table): the attention window changed;
        interpolate them with timm's resize_rel_pos_bias_table, or train them.
    """
    kinds: dict[str, list[ShapeMismatch]] = {}
    for m in mismatches:
        kinds.setdefault(position_kind(m.key, m.model_shape), []).append(m)
    out: list[str] = []
    if "image" in kinds:
        group = kinds["image"]
        keys = [m.key for m in group]
        them = "it" if len(group) == 1 else "them"
        noun = "embedding" if len(group) == 1 else "embeddings"
        out.append(
            f"The position {noun} {_listed(keys)} changed size ({_sizes(group[0])}): "
            f"interpolate {them} with timm's resample_abs_pos_embed, or train {them}."
        )
    if "relative" in kinds:
        group = kinds["relative"]
        first = group[0]
        where = (
            f"The relative-position table {first.key} changed size ({_sizes(first)})"
            if len(group) == 1
            else f"The relative-position tables of {len(group)} attention blocks changed size "
            f"({_sizes(first)}, e.g. {first.key})"
        )
        them = "it" if len(group) == 1 else "them"
        out.append(
            f"{where}: the attention window changed; interpolate {them} with timm's "
            f"resize_rel_pos_bias_table, or train {them}."
        )
    for m in kinds.get("text", []):
        rows, model_rows = m.checkpoint_shape[0], m.model_shape[0]
        out.append(
            f"The position table {m.key} has {rows} rows in the checkpoint and {model_rows} in "
            f"the model ({sequence_cause(rows, model_rows, kwargs)}). "
            f"{resize_text_positions(rows, model_rows)}"
        )
    return out


def fused_attention_sentence(explanations: Explanations) -> list[str]:
    """One sentence on attention projections fused on one side and split on the other."""
    model = [k for k, e in explanations.missing.items() if e.reason is Reason.RESHAPED]
    ckpt = [k for k, e in explanations.unexpected.items() if e.reason is Reason.RESHAPED]
    if not (model and ckpt):
        return []
    return [
        f"Attention projections are fused on one side and split on the other ({len(model)} "
        f"model and {len(ckpt)} checkpoint tensors, e.g. {model[0]}): split or concatenate "
        "them as each key's detail says (query, key, value order); they are not merged."
    ]


ADAPTER_REASONS: Mapping[Reason, str] = {
    Reason.TRANSPOSED: "transpose",
    Reason.INPUT_CHANNELS: "input_channels",
    Reason.POSITION_EMBEDDING_RESIZED: "position_embedding",
    Reason.RESHAPED: "qkv",
    Reason.QUANTIZED: "dequantize",
}
"""The reason of a key left unloaded -> the adapter of ``options.adapt`` that may load it."""


def helpful_adapters(explanations: Explanations, requested: Sequence[str]) -> tuple[str, ...]:
    """The ``adapt`` list to suggest: the requested adapters plus those the unloaded keys'
    reasons call for, in ``ADAPTERS`` order; empty when no new adapter is called for.

    Only a candidate: the caller checks it by analysing again (an adapter refuses layouts no
    forward test proves, and then loads nothing).

    Example:
        >>> from app.matching.shapes import Explanation
        >>> moved = {"w": Explanation(Reason.TRANSPOSED, "")}
        >>> helpful_adapters(Explanations({}, {}, moved, {}, (), ()), ["qkv"])
        ('transpose', 'qkv')
    """
    called = {
        ADAPTER_REASONS[e.reason]
        for e in (*explanations.missing.values(), *explanations.shape_mismatched.values())
        if e.reason in ADAPTER_REASONS
    }
    if called <= set(requested):
        return ()
    wanted = called | set(requested)
    return tuple(a for a in ADAPTERS if a in wanted)
