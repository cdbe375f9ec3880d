"""Structural pairing of attention projections fused on one side and split on the other.

transformers' ViT keeps ``attention.attention.{query,key,value}``; timm fuses them in
``attn.qkv``. A sequence alignment by shape cannot pair three (D, D) tensors with one (3D, D)
tensor, and left to it a lone ``query`` would be paired with the block's output projection
(the same shape): a wrong mapping. So, before the alignment, each fused tensor is matched with
a split group of the other side in the same block, and the checkpoint's tensor(s) are renamed
so that ``app.matching.attention`` groups them beside the model's: the checkpoint's ``query``
becomes ``blocks.0.attn.query.weight`` next to the model's ``blocks.0.attn.qkv.weight``. Such
names are no model keys: they load only through the ``qkv`` adapter, which the suggestion
names. Only the layout the adapter proves is paired (q, k, v in equal blocks along dim 0, no
per-head interleaving), and only a unique candidate in the same block position.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from app.matching.attention import is_interleaved, parse_projection
from app.matching.pair_evidence import Position
from app.tensors import TensorInfo


@dataclass(frozen=True, slots=True)
class FusedPairs:
    """Fused projections paired with their parts on the other side.

    Attributes:
        mapping: Checkpoint key -> the name that puts it beside its counterpart (no model key).
        checkpoint: Indices of the checkpoint tensors paired here.
        model: Indices of the model tensors paired here.
    """

    mapping: dict[str, str]
    checkpoint: frozenset[int]
    model: frozenset[int]


def pair_fused(
    ck: Sequence[TensorInfo],
    md: Sequence[TensorInfo],
    *,
    ck_positions: Sequence[Position],
    md_positions: Sequence[Position],
    reserved: Collection[str],
) -> FusedPairs:
    """Pair each fused attention projection with the one split group that fits it.

    Args:
        ck: Unloaded checkpoint tensors (original keys).
        md: Unloaded model tensors.
        ck_positions: Each checkpoint tensor's stack position.
        md_positions: Each model tensor's stack position.
        reserved: Names already taken (model keys, aligned checkpoint names).

    Returns:
        The renames and the indices they consume on each side.

    Example:
        >>> from app.tensors import TensorInfo
        >>> md = [TensorInfo("blk.attn.qkv.weight", (6, 2), "f")]
        >>> ck = [TensorInfo(f"layer.att.{r}.weight", (2, 2), "f") for r in ("query", "key", "value")]
        >>> pair_fused(ck, md, ck_positions=[None] * 3, md_positions=[None], reserved=()).mapping
        {'layer.att.query.weight': 'blk.attn.query.weight', 'layer.att.key.weight': 'blk.attn.key.weight', 'layer.att.value.weight': 'blk.attn.value.weight'}
    """  # noqa: E501
    mapping: dict[str, str] = {}
    used_c: set[int] = set()
    used_m: set[int] = set()
    for model_fused in (True, False):
        fused, split = (md, ck) if model_fused else (ck, md)
        fused_pos, split_pos = (
            (md_positions, ck_positions) if model_fused else (ck_positions, md_positions)
        )
        for f, slot, parts in _unique_matches(fused, split, fused_pos, split_pos):
            module, kind, name, roles = slot
            if model_fused:
                renames = {ck[parts[r]].key: f"{module}.{r}.{kind}" for r in roles}
                fused_side, split_side = used_m, used_c
            else:
                target_module = parse_projection(md[parts[roles[0]]].key)
                assert target_module is not None  # parts were parsed to be grouped
                renames = {ck[f].key: f"{target_module[0]}.{name}.{kind}"}
                fused_side, split_side = used_c, used_m
            if any(n in reserved or n in mapping.values() for n in renames.values()):
                continue
            mapping.update(renames)
            fused_side.add(f)
            split_side.update(parts.values())
    return FusedPairs(mapping, frozenset(used_c), frozenset(used_m))


_Slot = tuple[str, str, str, tuple[str, ...]]


def _unique_matches(
    fused: Sequence[TensorInfo],
    split: Sequence[TensorInfo],
    fused_pos: Sequence[Position],
    split_pos: Sequence[Position],
) -> list[tuple[int, _Slot, dict[str, int]]]:
    """(fused index, its parse, role -> split index) where exactly one split group fits it in
    its block and no other fused tensor claims that group."""
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    doubled: set[tuple[str, str]] = set()
    for i, info in enumerate(split):
        parsed = parse_projection(info.key)
        if parsed is None or len(parsed[3]) != 1:
            continue
        slot, role = (parsed[0], parsed[1]), parsed[3][0]
        if role in groups[slot]:
            doubled.add(slot)
        groups[slot][role] = i
    found: dict[int, tuple[_Slot, list[tuple[str, str]]]] = {}
    for f, info in enumerate(fused):
        parsed = parse_projection(info.key)
        if parsed is None or len(parsed[3]) < 2 or is_interleaved(parsed[2]):
            continue
        roles, kind = parsed[3], parsed[1]
        fits = [
            slot
            for slot, parts in groups.items()
            if slot not in doubled
            and slot[1] == kind
            and set(parts) == set(roles)
            and all(split_pos[parts[r]] == fused_pos[f] for r in roles)
            and _in_blocks(info.shape, [split[parts[r]].shape for r in roles])
        ]
        found[f] = (parsed, fits)
    claims = Counter(fits[0] for _, fits in found.values() if len(fits) == 1)
    return [
        (f, parsed, groups[fits[0]])
        for f, (parsed, fits) in found.items()
        if len(fits) == 1 and claims[fits[0]] == 1
    ]


def _in_blocks(fused: tuple[int, ...], parts: Sequence[tuple[int, ...]]) -> bool:
    """Equal parts concatenated along dim 0 make the fused tensor (the layout the ``qkv``
    adapter proves)."""
    return (
        len(fused) >= 1
        and len(set(parts)) == 1
        and parts[0][1:] == fused[1:]
        and parts[0][0] * len(parts) == fused[0]
    )
