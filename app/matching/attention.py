"""Attention projections fused on one side and split on the other (``qkv`` against q/k/v).

timm (``attn.qkv``), torchvision (``nn.MultiheadAttention.in_proj_weight``) and GPT-2
(``attn.c_attn``) keep query, key and value in one tensor; transformers' BERT, ViT, CLIP and
LLaMA keep three. Compared key by key, the fused tensor looks like a new module on one side
and the three parts like unused modules on the other, and the verdict would call that an
expected change ("new, train it") while every weight is there, in another layout. This module
pairs them so both sides are reported ``reshaped`` with what to split or concatenate, in which
order and along which dim. It only explains: a merge does not convert them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.enums import Reason
from app.matching.shapes import Explanation

ROLES = ("query", "key", "value")

# Fused module names -> the parts they hold, in their order along the fused dim.
_FUSED_MODULES: dict[str, tuple[str, ...]] = {
    name: ROLES
    for name in ("qkv", "c_attn", "query_key_value", "Wqkv", "qkv_proj", "to_qkv", "in_proj")
} | {"kv": ROLES[1:], "to_kv": ROLES[1:]}
# Fused tensors held by the attention module itself (torch.nn.MultiheadAttention).
_FUSED_TENSORS = {"in_proj_weight": "weight", "in_proj_bias": "bias"}
# Split module names -> the part each holds.
_SPLIT_MODULES: dict[str, str] = {
    f"{prefix}{role}{suffix}": full
    for role, full in zip("qkv", ROLES, strict=True)
    for prefix, suffix in (("", ""), ("", "_proj"), ("to_", ""), ("", "_lin"), ("w", ""))
} | {"query": "query", "key": "key", "value": "value"}
# Split tensors held by the attention module itself (MultiheadAttention with kdim != embed_dim).
_SPLIT_TENSORS = {
    f"{r}_proj_weight": ("weight", full) for r, full in zip("qkv", ROLES, strict=True)
}
# GPT-NeoX and BLOOM lay query_key_value out per head: [heads, 3, head_dim] along dim 0.
_INTERLEAVED = frozenset({"query_key_value"})


@dataclass(frozen=True, slots=True)
class _Part:
    """One attention tensor: the fused one, or one of the split ones (``role``)."""

    key: str
    shape: tuple[int, ...]
    name: str
    roles: tuple[str, ...]


def _parse(key: str, shape: tuple[int, ...]) -> tuple[tuple[str, str], _Part] | None:
    """``((attention module, weight|bias), part)`` when ``key`` is an attention projection."""
    head, _, leaf = key.rpartition(".")
    if leaf in _FUSED_TENSORS:
        return (head, _FUSED_TENSORS[leaf]), _Part(key, shape, "in_proj", ROLES)
    if leaf in _SPLIT_TENSORS:
        kind, role = _SPLIT_TENSORS[leaf]
        return (head, kind), _Part(key, shape, leaf, (role,))
    parent, _, name = head.rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    if name in _FUSED_MODULES:
        return (parent, leaf), _Part(key, shape, name, _FUSED_MODULES[name])
    if name in _SPLIT_MODULES:
        return (parent, leaf), _Part(key, shape, name, (_SPLIT_MODULES[name],))
    return None


def parse_projection(key: str) -> tuple[str, str, str, tuple[str, ...]] | None:
    """``(attention module, weight|bias, projection name, roles)`` of an attention projection.

    Structural pairing (``app.matching.fused_pairs``) names a tensor so that this module's
    grouping puts it beside its fused or split counterpart.

    Example:
        >>> parse_projection("blocks.0.attn.qkv.weight")
        ('blocks.0.attn', 'weight', 'qkv', ('query', 'key', 'value'))
    """
    parsed = _parse(key, ())
    if parsed is None:
        return None
    (module, kind), part = parsed
    return module, kind, part.name, part.roles


def is_interleaved(name: str) -> bool:
    """Whether a fused projection of this name may interleave its parts per head."""
    return name in _INTERLEAVED


def _group(keys: Mapping[str, tuple[int, ...]]) -> dict[tuple[str, str], list[_Part]]:
    groups: dict[tuple[str, str], list[_Part]] = {}
    for key, shape in keys.items():
        parsed = _parse(key, shape)
        if parsed is not None:
            groups.setdefault(parsed[0], []).append(parsed[1])
    return groups


def _concat_dim(fused: tuple[int, ...], parts: Iterable[tuple[int, ...]]) -> int | None:
    """The dim along which ``parts`` concatenate into ``fused``, if one does."""
    shapes = list(parts)
    for dim in range(min(len(fused), 2)):
        if all(len(s) == len(fused) for s in shapes) and sum(s[dim] for s in shapes) == fused[dim]:
            rest = [s[:dim] + s[dim + 1 :] for s in shapes]
            if all(r == fused[:dim] + fused[dim + 1 :] for r in rest):
                return dim
    return None


@dataclass(frozen=True, slots=True)
class FusedGroup:
    """A fused projection on one side whose parts all sit on the other side.

    Attributes:
        fused: The fused tensor's key (a model key when ``model_fused``, else an aligned
            checkpoint key).
        parts: The parts' keys, in their order along ``dim`` of the fused tensor.
        sizes: Each part's size along ``dim``.
        roles: What each part holds (``query``, ``key``, ``value``).
        dim: The dim along which the parts concatenate into the fused tensor.
        model_fused: Whether the model holds the fused tensor (the checkpoint the parts).
        interleaved: Whether the fused name is one whose layout may interleave per head
            (GPT-NeoX, BLOOM, Falcon ``query_key_value``): blocks would be wrong.
    """

    fused: str
    parts: tuple[str, ...]
    sizes: tuple[int, ...]
    roles: tuple[str, ...]
    dim: int
    model_fused: bool
    interleaved: bool


def find_fused_groups(
    missing: Mapping[str, tuple[int, ...]], unexpected: Mapping[str, tuple[int, ...]]
) -> list[FusedGroup]:
    """Pair fused attention tensors on one side with their parts on the other.

    Args:
        missing: Model keys the checkpoint lacks -> their shapes.
        unexpected: Aligned checkpoint keys the model lacks -> their shapes.

    Returns:
        Every fused tensor whose parts all sit on the other side, in the same attention
        module, with shapes that concatenate along one dim.
    """
    model_groups, ckpt_groups = _group(missing), _group(unexpected)
    out: list[FusedGroup] = []
    for slot in model_groups.keys() & ckpt_groups.keys():
        for fused_side, split_side, model_fused in (
            (model_groups[slot], ckpt_groups[slot], True),
            (ckpt_groups[slot], model_groups[slot], False),
        ):
            split = {p.roles[0]: p for p in split_side if len(p.roles) == 1}
            for fused in (p for p in fused_side if len(p.roles) > 1):
                found = [split[role] for role in fused.roles if role in split]
                if len(found) != len(fused.roles):
                    continue
                dim = _concat_dim(fused.shape, (p.shape for p in found))
                if dim is not None:
                    out.append(
                        FusedGroup(
                            fused=fused.key,
                            parts=tuple(p.key for p in found),
                            sizes=tuple(p.shape[dim] for p in found),
                            roles=fused.roles,
                            dim=dim,
                            model_fused=model_fused,
                            interleaved=fused.name in _INTERLEAVED,
                        )
                    )
    return out


def explain_fused_attention(
    missing: Mapping[str, tuple[int, ...]],
    unexpected: Mapping[str, tuple[int, ...]],
    *,
    sources: Mapping[str, str],
) -> dict[str, Explanation]:
    """Explain the missing and unexpected keys that are fused/split attention projections.

    Args:
        missing: Model keys the checkpoint lacks -> their shapes.
        unexpected: Aligned checkpoint keys the model lacks -> their shapes.
        sources: Aligned key -> original checkpoint key (details name keys as stored).

    Returns:
        Key (model key or aligned checkpoint key) -> a ``reshaped`` explanation, for every key
        of a fused tensor on one side whose parts all sit on the other side, in the same
        attention module, with shapes that concatenate.

    Example:
        >>> why = explain_fused_attention(
        ...     {"blk.attn.qkv.weight": (24, 8)},
        ...     {f"blk.attn.{n}.weight": (8, 8) for n in ("query", "key", "value")},
        ...     sources={},
        ... )
        >>> print(why["blk.attn.qkv.weight"].detail)  # doctest: +NORMALIZE_WHITESPACE
        The checkpoint splits this fused projection into 3 tensors: concatenate
        'blk.attn.query.weight', 'blk.attn.key.weight', 'blk.attn.value.weight' (query, key,
        value, in that order) along dim 0. Not merged.
    """
    out: dict[str, Explanation] = {}
    for group in find_fused_groups(missing, unexpected):
        out.update(_explain_group(group, sources))
    return out


def _explain_group(group: FusedGroup, sources: Mapping[str, str]) -> dict[str, Explanation]:
    model_fused, dim = group.model_fused, group.dim

    def name(key: str, on_model: bool) -> str:
        return repr(key if on_model else sources.get(key, key))

    roles = ", ".join(group.roles)
    listed = ", ".join(name(p, not model_fused) for p in group.parts)
    layout = _layout(group)
    if model_fused:
        whole = (
            f"The checkpoint splits this fused projection into {len(group.parts)} tensors: "
            f"concatenate {listed} ({roles}, in that order) along dim {dim}{layout}. Not merged."
        )
    else:
        sizes = ", ".join(str(size) for size in group.sizes)
        whole = (
            f"The model splits this fused projection into {listed}: split it along dim {dim} "
            f"into parts of {sizes} ({roles}, in that order){layout}. Not merged."
        )
    out = {group.fused: Explanation(Reason.RESHAPED, whole)}
    start = 0
    for part, role, size in zip(group.parts, group.roles, group.sizes, strict=True):
        end = start + size
        where = "model" if model_fused else "checkpoint"
        verb = "concatenate the parts into it" if model_fused else "split it out"
        out[part] = Explanation(
            Reason.RESHAPED,
            f"The {where} fuses {roles} in {name(group.fused, model_fused)}: this {role} "
            f"tensor is its slice {start}:{end} along dim {dim}{layout}; {verb}. Not merged.",
        )
        start = end
    return out


def _layout(group: FusedGroup) -> str:
    """Caveats of the fused tensor's layout that the shapes alone do not show."""
    if group.interleaved and group.dim == 0:
        return (
            " (if it is GPT-NeoX's or BLOOM's, the parts interleave per attention head, "
            "[heads, 3, head_dim]: split per head, not in blocks)"
        )
    if group.dim == 1:
        return (
            " (the fused weight is stored (in, out), as GPT-2's Conv1D does: a part stored "
            "(out, in), as nn.Linear does, goes in transposed)"
        )
    return ""
