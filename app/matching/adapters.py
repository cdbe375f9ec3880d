"""Opt-in adapters (``options.adapt``): which keys they load, and how. Pure: shapes only.

A key that does not load as it is (stored transposed, a stem with other input channels, a
resized position table, q/k/v fused on one side and split on the other, a quantized weight:
``app.matching.dequantization``) loads when the caller names its adapter: it then counts as
loaded, and ``app.merge.adapters`` computes its value from the checkpoint's tensors with the
library's own helper. Only layouts that a test proves are adapted; any other keeps its reason,
and its detail says why the adapter left it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from app.enums import Reason
from app.matching.attention import FusedGroup, find_fused_groups
from app.matching.compare import MatchResult, ShapeMismatch
from app.matching.dequantization import dequantizations
from app.matching.layouts import Layouts
from app.matching.reasons import Explanations
from app.matching.shapes import Explanation, position_kind
from app.tensors import TensorIndex, TensorKind

ADAPTERS = ("transpose", "input_channels", "position_embedding", "qkv", "dequantize")
"""The adapters, in the order they are reported."""

_MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens kept ahead of the grid
_MAX_LISTED = 5


@dataclass(frozen=True, slots=True)
class Adaptation:
    """How one model key is computed from checkpoint tensors.

    Attributes:
        key: The model key.
        adapter: The adapter (one of ``ADAPTERS``), or ``conversion`` for a library's own
            load-time fusion (``app.matching.fusions``).
        operation: ``transpose``, ``input_channels``, ``image``, ``relative``, ``text``,
            ``fuse``, ``split`` or ``library_fusion`` (``dim``: its Concatenate dim, 0 for
            none; ``start``: how many parts ``checkpoint_keys`` holds, one run each); for
            ``dequantize``, the scheme: ``bnb_int8``, ``bnb_4bit`` or ``fp8``.
        checkpoint_keys: The checkpoint tensors it reads, as stored in the file, in order.
        detail: One sentence for the report.
        shape: The model's shape (what the result must have).
        dim: ``fuse``/``split``: the concatenation dim.
        start: ``split``: where the part starts along ``dim``.
        prefix_tokens: ``image``: class/register tokens kept ahead of the grid.
        old_grid: ``image``: the checkpoint's patch grid.
        new_grid: ``image``: the model's patch grid; ``relative``: the model's window.
    """

    key: str
    adapter: str
    operation: str
    checkpoint_keys: tuple[str, ...]
    detail: str
    shape: tuple[int, ...]
    dim: int = 0
    start: int = 0
    prefix_tokens: int = 0
    old_grid: tuple[int, int] = (0, 0)
    new_grid: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class Adapted:
    """The match once the requested adapters loaded what they can."""

    result: MatchResult
    explanations: Explanations
    adaptations: tuple[Adaptation, ...]
    notes: tuple[str, ...]


def apply_adapters(
    result: MatchResult,
    explanations: Explanations,
    *,
    adapt: Sequence[str],
    checkpoint: TensorIndex,
    model: TensorIndex,
    sources: Mapping[str, str],
    layouts: Layouts | None = None,
) -> Adapted:
    """Load, through the adapters named in ``adapt``, the keys whose reason each one fixes.

    Args:
        result: The match (after ties).
        explanations: Its explanations (final reasons).
        adapt: The requested adapters (``options.adapt``).
        checkpoint: The aligned checkpoint index.
        model: The model index.
        sources: Aligned key -> original checkpoint key.
        layouts: The checkpoint's quantized layouts, for ``dequantize``.

    Returns:
        The result with adapted keys matched and counted as loaded (the checkpoint keys they
        consume no longer unexpected), explanations without them (refused keys keep their
        reason, with why), the adaptations for the merge, and a note per adapter.
    """
    wanted = set(adapt)
    if not wanted:
        return Adapted(result, explanations, (), ())
    found: list[Adaptation] = []
    refused: dict[str, str] = {}  # key -> why the adapter left it
    for m in result.shape_mismatched:
        why = explanations.shape_mismatched.get(m.key)
        if why is None:
            continue
        origin = sources.get(m.key, m.key)
        outcome = _for_mismatch(m, why, wanted, origin)
        if isinstance(outcome, Adaptation):
            found.append(outcome)
        elif outcome is not None:
            refused[m.key] = outcome
    if "qkv" in wanted:
        groups = find_fused_groups(
            {k: model.tensors[k].shape for k in result.missing},
            {k: checkpoint.tensors[k].shape for k in result.unexpected},
        )
        for group in groups:
            if _still_reshaped(group, explanations):
                fused, why_not = _qkv(group, model, sources)
                found.extend(fused)
                refused.update(dict.fromkeys(_model_keys(group), why_not) if why_not else {})
    if "dequantize" in wanted and layouts is not None:
        dequantized, left = dequantizations(
            layouts.quantized, missing=explanations.missing, model=model, sources=sources
        )
        found += [
            Adaptation(d.key, "dequantize", d.scheme, d.checkpoint_keys, d.detail, d.shape)
            for d in dequantized
        ]
        refused.update(left)
    if not found and not refused:
        return Adapted(result, explanations, (), ())
    aligned = {original: key for key, original in sources.items()}
    consumed = {aligned.get(k, k) for a in found for k in a.checkpoint_keys}
    return Adapted(
        result=_absorb(result, model, {a.key for a in found}, consumed),
        explanations=_explain(explanations, {a.key for a in found}, consumed, refused),
        adaptations=tuple(found),
        notes=_notes(found, refused),
    )


def _for_mismatch(
    m: ShapeMismatch, why: Explanation, wanted: set[str], origin: str
) -> Adaptation | str | None:
    """The adaptation of one shape mismatch, a reason to refuse it, or None (not asked)."""
    ckpt, shape = m.checkpoint_shape, m.model_shape
    if why.reason is Reason.TRANSPOSED and "transpose" in wanted:
        if ckpt != shape[::-1] or len(shape) != 2:
            return "the checkpoint tensor is not the transpose of the model's"
        return Adaptation(
            m.key, "transpose", "transpose", (origin,), "Loaded transposed.", tuple(shape)
        )
    if why.reason is Reason.INPUT_CHANNELS and "input_channels" in wanted:
        return _input_channels(m, origin)
    if why.reason is Reason.POSITION_EMBEDDING_RESIZED and "position_embedding" in wanted:
        return _position(m, origin)
    return None


def _input_channels(m: ShapeMismatch, origin: str) -> Adaptation | str:
    """timm's ``adapt_input_conv`` (base 3 channels): what it converts to the right shape."""
    ckpt, shape = m.checkpoint_shape, m.model_shape
    have, want = ckpt[1], shape[1]
    # adapt_input_conv repeats a 3-channel kernel to any count but 3 and sums up to 3 into
    # 1; other pairs it returns unchanged or refuses, so the merge would not fit the model.
    if len(shape) != 4 or not ((have == 3 and want != 3) or (want == 1 and have <= 3)):
        return (
            "timm's adapt_input_conv converts a 4-D kernel of 3 input channels to any other "
            f"count, or sums up to 3 into 1; not {have} into {want}"
        )
    how = "summed into 1 channel" if want == 1 else f"repeated to {want} channels, rescaled"
    detail = f"Loaded through timm's adapt_input_conv: {have} input channels {how}."
    return Adaptation(m.key, "input_channels", "input_channels", (origin,), detail, tuple(shape))


def _position(m: ShapeMismatch, origin: str) -> Adaptation | str:
    ckpt, shape = m.checkpoint_shape, m.model_shape
    kind = position_kind(m.key, shape)
    base = Adaptation(m.key, "position_embedding", kind, (origin,), "", tuple(shape))
    if kind == "relative":
        window, old = _rel_window(shape[0]), _rel_window(ckpt[0])
        if len(shape) != 2 or window is None or old is None or ckpt[1] != shape[1]:
            return "the relative-position tables are not square windows of the same heads"
        detail = (
            f"Loaded through timm's resize_rel_pos_bias_table: window {old[0]}x{old[0]} -> "
            f"{window[0]}x{window[0]}."
        )
        return replace(base, detail=detail, new_grid=(window[0], window[0]))
    if kind == "text":
        if len(shape) != 2 or ckpt[1] != shape[1]:
            return "the text position tables differ in width, not only in length"
        how = (
            f"truncated to its first {shape[0]} rows"
            if shape[0] < ckpt[0]
            else f"extended from {ckpt[0]} to {shape[0]} rows by repeating its rows in order"
        )
        return replace(base, detail=f"The position table {how}.")
    grids = _image_grids(ckpt, shape)
    if grids is None:
        return (
            "the image position tables are not a square patch grid behind up to "
            f"{_MAX_PREFIX_TOKENS} prefix tokens on both sides"
        )
    prefix, old_side, new_side = grids
    detail = (
        f"Loaded through timm's resample_abs_pos_embed: grid {old_side}x{old_side} -> "
        f"{new_side}x{new_side} (bicubic), {prefix} prefix tokens kept."
    )
    return replace(
        base,
        detail=detail,
        prefix_tokens=prefix,
        old_grid=(old_side, old_side),
        new_grid=(new_side, new_side),
    )


def _image_grids(ckpt: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(prefix tokens, old side, new side): the fewest prefix tokens leaving two square grids."""
    if len(shape) not in (2, 3) or len(ckpt) != len(shape) or ckpt[-1] != shape[-1]:
        return None
    if len(shape) == 3 and (shape[0] != 1 or ckpt[0] != 1):
        return None
    old, new = ckpt[-2], shape[-2]
    for prefix in range(min(_MAX_PREFIX_TOKENS, old, new) + 1):
        old_side, new_side = _square_side(old - prefix), _square_side(new - prefix)
        if old_side and new_side:
            return prefix, old_side, new_side
    return None


def _rel_window(rows: int) -> tuple[int, int] | None:
    """The square window of a flat relative table: (2W-1)^2 rows, plus 3 for BEiT's tokens."""
    for extra in (0, 3):
        side = _square_side(rows - extra)
        if side and side % 2 == 1:
            return (side + 1) // 2, extra
    return None


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side and side * side == n else None


def _still_reshaped(group: FusedGroup, explanations: Explanations) -> bool:
    """Every key of the group is still explained as fused attention (nothing relabelled it)."""
    model_side = explanations.missing
    ckpt_side = explanations.unexpected
    fused_side, parts_side = (
        (model_side, ckpt_side) if group.model_fused else (ckpt_side, model_side)
    )
    keys = [(fused_side, group.fused), *((parts_side, p) for p in group.parts)]
    return all(
        side.get(k, None) is not None and side[k].reason is Reason.RESHAPED for side, k in keys
    )


def _model_keys(group: FusedGroup) -> tuple[str, ...]:
    return (group.fused,) if group.model_fused else group.parts


def _qkv(
    group: FusedGroup, model: TensorIndex, sources: Mapping[str, str]
) -> tuple[list[Adaptation], str | None]:
    """The fuse/split adaptations of one group, or why its layout is not proven."""
    if group.interleaved:
        return [], (
            "GPT-NeoX, BLOOM and Falcon interleave query_key_value per attention head; "
            "only q, k, v in three blocks (timm qkv, torch in_proj_weight) are proven"
        )
    if group.dim != 0:
        return [], "a fused weight stored (in, out) (GPT-2's Conv1D c_attn) is not proven"
    if len(group.parts) != 3 or len(set(group.sizes)) != 1:
        return [], (
            "parts of unequal size (grouped-query attention) or without all of q, k, v are "
            "not proven"
        )
    order = ", ".join(group.roles)
    if group.model_fused:
        originals = tuple(sources.get(p, p) for p in group.parts)
        detail = f"Concatenated from {len(originals)} checkpoint tensors ({order}) along dim 0."
        shape = model.tensors[group.fused].shape
        return [Adaptation(group.fused, "qkv", "fuse", originals, detail, tuple(shape))], None
    origin = sources.get(group.fused, group.fused)
    out, start = [], 0
    for part, role, size in zip(group.parts, group.roles, group.sizes, strict=True):
        detail = f"The {role} slice {start}:{start + size} along dim 0 of {origin!r}."
        shape = model.tensors[part].shape
        out.append(Adaptation(part, "qkv", "split", (origin,), detail, tuple(shape), start=start))
        start += size
    return out, None


def absorb(
    result: MatchResult,
    explanations: Explanations,
    *,
    model: TensorIndex,
    loaded: set[str],
    consumed: set[str],
) -> tuple[MatchResult, Explanations]:
    """Model keys computed from checkpoint tensors count as loaded, and the (aligned)
    checkpoint keys they read as used: shared by the adapters and the library's fusions."""
    return _absorb(result, model, loaded, consumed), _explain(explanations, loaded, consumed, {})


def _absorb(
    result: MatchResult, model: TensorIndex, loaded: set[str], consumed: set[str]
) -> MatchResult:
    """Adapted keys become matched and counted; the checkpoint keys they read, used."""
    matched = set(result.matched) | loaded
    gained = sum(
        model.tensors[k].numel for k in loaded if model.tensors[k].kind is TensorKind.PARAMETER
    )
    return replace(
        result,
        matched=tuple(info.key for info in model if info.key in matched),
        missing=tuple(k for k in result.missing if k not in loaded),
        shape_mismatched=tuple(m for m in result.shape_mismatched if m.key not in loaded),
        unexpected=tuple(k for k in result.unexpected if k not in consumed),
        loaded_parameter_numel=result.loaded_parameter_numel + gained,
    )


def _explain(
    explanations: Explanations, loaded: set[str], consumed: set[str], refused: Mapping[str, str]
) -> Explanations:
    def keep(group: Mapping[str, Explanation], drop: set[str]) -> dict[str, Explanation]:
        return {
            k: Explanation(e.reason, f"{e.detail} Not adapted: {refused[k]}.")
            if k in refused
            else e
            for k, e in group.items()
            if k not in drop
        }

    return replace(
        explanations,
        missing=keep(explanations.missing, loaded),
        unexpected=keep(explanations.unexpected, consumed),
        shape_mismatched=keep(explanations.shape_mismatched, loaded),
    )


def _notes(found: Sequence[Adaptation], refused: Mapping[str, str]) -> tuple[str, ...]:
    notes = []
    for adapter in ADAPTERS:
        keys = [a.key for a in found if a.adapter == adapter]
        if keys:
            notes.append(
                f"Adapter {adapter}: {len(keys)} keys loaded through it ({_listed(keys)}); "
                "keys.adapted says how each was computed."
            )
    if refused:
        notes.append(
            f"{len(refused)} keys were left as they are by the requested adapters "
            f"({_listed(list(refused))}): their details say why."
        )
    return tuple(notes)


def _listed(names: Sequence[str]) -> str:
    more = f", ... {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more
