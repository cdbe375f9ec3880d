"""Structure-aware pairing: the tensors two libraries name differently, paired by order and shape.

timm's ``blocks.3.attn.qkv`` is torchvision's ``encoder.layers.encoder_layer_3.self_attention
.in_proj``; no prefix says so, but both trees register the same tensors in the same order
with the same shapes. A sequence alignment (longest common subsequence over the tensors
neither side loads, a pair allowed only for equal shapes and the same leaf role) recovers
that; tensors left out of order (detectron2 registers ``shortcut`` before ``conv1``) are
paired afterwards only when their shape is unique on both sides. Names still count as
evidence against a pair: a checkpoint tensor that shares more path words with another
same-shaped model tensor than with its partner is not paired (two same-shaped blocks stored in
swapped order are never mapped crosswise).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.matching.fused_pairs import FusedPairs, pair_fused
from app.matching.pair_evidence import (
    Position,
    path_words,
    positions,
    registration_order,
    role,
)
from app.tensors import TensorIndex, TensorInfo, TensorKind

MAX_CELLS = 1_500_000
"""The largest alignment table (unloaded checkpoint tensors x unloaded model tensors) tried;
about a second of pure Python. Larger remainders are not paired (a note says so)."""


@dataclass(frozen=True, slots=True)
class Pairing:
    """Tensors paired by structure.

    Attributes:
        mapping: Original checkpoint key -> model key.
        unambiguous: Every pair is in order, every paired module maps to one module, and
            every unloaded tensor of a paired module is paired: safe to apply automatically.
        doubts: Why it is not unambiguous, in plain words (empty when it is).
    """

    mapping: Mapping[str, str]
    unambiguous: bool
    doubts: tuple[str, ...] = ()


def _parent(key: str) -> str:
    return key.rpartition(".")[0]


def _lcs(ck: Sequence[TensorInfo], md: Sequence[TensorInfo]) -> list[tuple[int, int]]:
    """Order-preserving pairs of equal signature, most pairs first, name overlap breaking ties."""
    sig_c = [(i.shape, role(i.key)) for i in ck]
    sig_m = [(i.shape, role(i.key)) for i in md]
    words_c, words_m = path_words(ck), path_words(md)
    n, m = len(ck), len(md)
    # score = 1000 per pair + shared path words, so names only break ties between equal counts
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for j in range(m - 1, -1, -1):
            best = below[j] if below[j] >= row[j + 1] else row[j + 1]
            if sig_c[i] == sig_m[j]:
                take = below[j + 1] + 1000 + len(words_c[i] & words_m[j])
                if take > best:
                    best = take
            row[j] = best
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < n and j < m:
        if sig_c[i] == sig_m[j] and table[i][j] == table[i + 1][j + 1] + 1000 + len(
            words_c[i] & words_m[j]
        ):
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def _contradicted(
    pairs: list[tuple[int, int]], ck: Sequence[TensorInfo], md: Sequence[TensorInfo]
) -> set[tuple[int, int]]:
    """Pairs whose names point elsewhere: a same-signature model tensor shares more path
    words with the checkpoint tensor than its partner does (or the other way round)."""
    by_sig_m: dict[tuple[object, str], list[int]] = defaultdict(list)
    by_sig_c: dict[tuple[object, str], list[int]] = defaultdict(list)
    for j, info in enumerate(md):
        by_sig_m[(info.shape, role(info.key))].append(j)
    for i, info in enumerate(ck):
        by_sig_c[(info.shape, role(info.key))].append(i)
    words_c, words_m = path_words(ck), path_words(md)
    bad = set()
    for i, j in pairs:
        sig = (ck[i].shape, role(ck[i].key))
        own = len(words_c[i] & words_m[j])
        if any(len(words_c[i] & words_m[k]) > own for k in by_sig_m[sig]) or any(
            len(words_c[k] & words_m[j]) > own for k in by_sig_c[sig]
        ):
            bad.add((i, j))
    return bad


def _unique_leftovers(
    pairs: list[tuple[int, int]], ck: Sequence[TensorInfo], md: Sequence[TensorInfo]
) -> list[tuple[int, int]]:
    used_c = {i for i, _ in pairs}
    used_m = {j for _, j in pairs}
    left_c: dict[tuple[object, str], list[int]] = defaultdict(list)
    left_m: dict[tuple[object, str], list[int]] = defaultdict(list)
    for i, info in enumerate(ck):
        if i not in used_c:
            left_c[(info.shape, role(info.key))].append(i)
    for j, info in enumerate(md):
        if j not in used_m:
            left_m[(info.shape, role(info.key))].append(j)
    return [
        (c[0], left_m[sig][0])
        for sig, c in left_c.items()
        if len(c) == 1 and len(left_m.get(sig, ())) == 1
    ]


def _unloaded(
    names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Checkpoint tensors whose name is no model key, and model tensors no checkpoint key
    names. A name present on both sides with other shapes is a shape mismatch (a resized
    head, a transposed Conv1D) that other reasons explain; pairing never moves it."""
    named = set(names.values())
    ck = [i for i in checkpoint if i.key in names and names[i.key] not in model and i.numel > 0]
    md = [i for i in model if i.key not in named and i.kind is not TensorKind.TIED]
    return ck, md


def could_pair(names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex) -> bool:
    """Whether a model parameter left random has an unused checkpoint tensor of its shape and
    leaf role: a linear check, so pairing's table is built only when it can help."""
    ck, md = _unloaded(names, checkpoint, model)
    signatures = {(i.shape, role(i.key)) for i in ck}
    return any(i.kind is TensorKind.PARAMETER and (i.shape, role(i.key)) in signatures for i in md)


def pair_by_structure(
    names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex
) -> Pairing | None:
    """Pair the checkpoint tensors that do not load with the model tensors that stay missing.

    Args:
        names: Original checkpoint key -> aligned key (the alignment so far).
        checkpoint: The checkpoint's tensors (original keys, file order).
        model: The model's tensors (state_dict order).

    Returns:
        The pairing, or None when nothing pairs or the table would exceed ``MAX_CELLS``.

    Example:
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos([TensorInfo("a.fc.weight", (3, 2), "f", p)])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("b.lin.weight", (3, 2), "f")])
        >>> pair_by_structure({"b.lin.weight": "b.lin.weight"}, ckpt, model).mapping
        {'b.lin.weight': 'a.fc.weight'}
    """
    ck, md = _unloaded(names, checkpoint, model)
    if not ck or not md or len(ck) * len(md) > MAX_CELLS:
        return None
    ck = registration_order(ck)
    fused = _fused(ck, md, names=names, model=model)
    ck = [info for i, info in enumerate(ck) if i not in fused.checkpoint]
    md = [info for j, info in enumerate(md) if j not in fused.model]
    pairs = _lcs(ck, md)
    contradicted = _contradicted(pairs, ck, md)
    pairs = [p for p in pairs if p not in contradicted]
    late = _unique_leftovers(pairs, ck, md)
    late = [p for p in late if p not in _contradicted(late, ck, md)]
    inner: list[tuple[int, int]] = []
    while found := _by_names(pairs + late + inner, ck, md):
        inner += found  # a pair by names can leave one candidate each in its group
    everything = sorted(pairs + late + inner)
    if not everything and not fused.mapping:
        return None
    mapping = {**fused.mapping, **{ck[i].key: md[j].key for i, j in everything}}
    doubts = _doubts(
        everything, ck, md, contradicted=len(contradicted), late=len(late), inner=len(inner)
    )
    return Pairing(mapping=mapping, unambiguous=not doubts, doubts=tuple(doubts))


def _fused(
    ck: Sequence[TensorInfo],
    md: Sequence[TensorInfo],
    *,
    names: Mapping[str, str],
    model: TensorIndex,
) -> FusedPairs:
    """Fused attention projections paired first, so the alignment never pairs a lone
    ``query`` with the same-shaped output projection."""
    return pair_fused(
        ck,
        md,
        ck_positions=positions(ck),
        md_positions=positions(md),
        reserved={*model.tensors, *names.values()},
    )


def _by_names(
    pairs: list[tuple[int, int]], ck: Sequence[TensorInfo], md: Sequence[TensorInfo]
) -> list[tuple[int, int]]:
    """Leftovers of one signature and block position paired where each is the other's one best
    match by shared path words (``layernorm_before`` is ``norm1``, see ``MODULE_SYNONYMS``).

    Order is no evidence here: transformers' ViT registers ``layernorm_before`` after the
    attention and a sorted file puts ``layernorm_after`` first, while timm's ``norm1`` comes
    first. Names are, when they single out one partner on each side.
    """
    used_c = {i for i, _ in pairs}
    used_m = {j for _, j in pairs}
    words_c, words_m = path_words(ck), path_words(md)
    pos_c, pos_m = positions(ck), positions(md)
    groups: dict[tuple[object, str, Position], tuple[list[int], list[int]]] = defaultdict(
        lambda: ([], [])
    )
    for i, info in enumerate(ck):
        if i not in used_c:
            groups[(info.shape, role(info.key), pos_c[i])][0].append(i)
    for j, info in enumerate(md):
        if j not in used_m:
            groups[(md[j].shape, role(info.key), pos_m[j])][1].append(j)
    found: list[tuple[int, int]] = []
    for rows, cols in groups.values():
        best_c = {i: _best(words_c[i], [(j, words_m[j]) for j in cols]) for i in rows}
        best_m = {j: _best(words_m[j], [(i, words_c[i]) for i in rows]) for j in cols}
        found += [(i, j) for i, j in best_c.items() if j is not None and best_m[j] == i]
    return found


def _best(words: frozenset[str], others: Sequence[tuple[int, frozenset[str]]]) -> int | None:
    """The one candidate sharing the most words (at least one), or None on a tie."""
    scored = sorted(((len(words & w), k) for k, w in others), reverse=True)
    if not scored or scored[0][0] == 0 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


def _doubts(
    pairs: list[tuple[int, int]],
    ck: Sequence[TensorInfo],
    md: Sequence[TensorInfo],
    *,
    contradicted: int,
    late: int,
    inner: int = 0,
) -> list[str]:
    doubts = []
    if contradicted:
        doubts.append(f"{contradicted} pairs by order were contradicted by the names")
    if late:
        doubts.append(f"{late} tensors pair only out of order")
    if inner:
        doubts.append(f"{inner} tensors pair only by their names")
    modules: dict[str, set[str]] = defaultdict(set)
    back: dict[str, set[str]] = defaultdict(set)
    for i, j in pairs:
        modules[_parent(ck[i].key)].add(_parent(md[j].key))
        back[_parent(md[j].key)].add(_parent(ck[i].key))
    if any(len(t) > 1 for t in modules.values()) or any(len(t) > 1 for t in back.values()):
        doubts.append("some module's tensors go to several modules")
    paired_c = {i for i, _ in pairs}
    paired_m = {j for _, j in pairs}
    partial = [
        info.key for k, info in enumerate(ck) if k not in paired_c and _parent(info.key) in modules
    ] + [info.key for k, info in enumerate(md) if k not in paired_m and _parent(info.key) in back]
    if partial:
        doubts.append(f"{len(partial)} tensors of paired modules stay unpaired ({partial[0]!r})")
    return doubts
