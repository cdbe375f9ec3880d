"""A library's many-to-one load-time converters, applied: per-expert tensors fused into one.

transformers 5 stores a Mixture-of-Experts layer's experts as one 3-D parameter
(``mlp.experts.gate_up_proj``: every expert's ``w1`` and ``w3`` stacked and concatenated),
and its loader fuses the per-expert tensors of a file saved by transformers 4.x
(``block_sparse_moe.experts.3.w1.weight``) with ``WeightConverter`` operations. Here the same
grouping is found from key names and shapes only: the checkpoint keys each fused model key is
built from, in the order transformers collects them (its ``dot_natural_key`` sort), and the
shape its operations give. A fused key then counts as loaded, its sources as used, and the
merge builds it with the library's own operation classes (``app.merge.fusion``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.enums import TransformKind
from app.matching.adapters import Adaptation, absorb
from app.matching.compare import MatchResult
from app.matching.converters import (
    CONCATENATE,
    STACK,
    buildable,
    compiled,
    fix_base_prefix,
    rename_key,
    scope_key,
)
from app.matching.reasons import Explanations
from app.matching.transforms import AUTO, AppliedStep, Transform
from app.tensors import KeyFusion, KeyRenaming, TensorIndex

CONVERSION = "conversion"
"""The ``adapter`` of a fused key in ``keys.adapted``: the library's converter, not an option."""

LIBRARY_FUSION = "library_fusion"
"""The merge operation that replays a fusion (``app.merge.fusion``)."""

_MAX_LISTED = 3


@dataclass(frozen=True, slots=True)
class Fused:
    """The match once the library's fusions built what they can.

    Attributes:
        result: Fused keys matched and counted; their checkpoint keys no longer unexpected.
        explanations: Without the fused keys and their sources.
        adaptations: One per fused key, for the merge (``operation`` ``library_fusion``).
        steps: One applied transform per fusion rule used (kind ``conversion``).
        notes: What was fused, and what was left and why.
    """

    result: MatchResult
    explanations: Explanations
    adaptations: tuple[Adaptation, ...]
    steps: tuple[AppliedStep, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Source:
    order: tuple[tuple[int, int | str, int], ...]  # transformers' dot_natural_key
    original: str
    aligned: str
    index: str  # what the pattern's ``*`` matched (the expert number)


def apply_fusions(
    result: MatchResult,
    explanations: Explanations,
    *,
    fusions: Sequence[KeyFusion],
    checkpoint: TensorIndex,
    model: TensorIndex,
    sources: Mapping[str, str],
    base_model_prefix: str | None,
    renamings: Sequence[KeyRenaming] = (),
) -> Fused:
    """Build each missing model key that a buildable fusion makes from unexpected keys.

    Args:
        result: The match (after ties).
        explanations: Its explanations.
        fusions: The architecture's fusions (``ArchitectureIndex.fusions``).
        checkpoint: The aligned checkpoint index.
        model: The model index.
        sources: Aligned key -> original checkpoint key.
        base_model_prefix: The model's base-model prefix, added or stripped as transformers
            does when that names a model key.
        renamings: The library's renamings, which its loader applies before any converter
            (Mixtral's ``block_sparse_moe`` -> ``mlp``): a key the alignment left unrenamed
            (they loaded nothing more) is tried renamed too.

    Returns:
        The match with fused keys loaded; unchanged when no fusion applies (the pre-check is
        a scan of the unexpected keys, so a model without fusions pays nothing).

    Example:
        >>> fused = apply_fusions(result, why, fusions=arch.fusions, checkpoint=aligned,
        ...                       model=arch.index, sources=alignment.sources,
        ...                       base_model_prefix="model")  # doctest: +SKIP
        >>> fused.adaptations[0].key  # doctest: +SKIP
        'model.layers.0.mlp.experts.gate_up_proj'
    """
    usable = [f for f in fusions if buildable(f)]
    if not usable or not result.unexpected:
        return Fused(result, explanations, (), (), ())
    missing = set(result.missing)
    candidates = {key: _renamed(key, renamings) for key in result.unexpected}
    found: list[Adaptation] = []
    steps: list[AppliedStep] = []
    refused: dict[str, str] = {}
    taken: set[str] = set()
    for fusion in usable:
        groups = _groups(fusion, candidates, taken, missing, model, base_model_prefix)
        built = 0
        for target, by_pattern in groups.items():
            outcome = _build(fusion, target, by_pattern, checkpoint, model, sources)
            if isinstance(outcome, str):
                refused[target] = outcome
                continue
            found.append(outcome)
            taken.update(k for keys in by_pattern.values() for k in keys)
            built += len(outcome.checkpoint_keys)
        if built:
            rule = Transform(
                TransformKind.CONVERSION,
                pattern=fusion.pattern,
                replacement=fusion.target,
                origin=AUTO,
            )
            steps.append(AppliedStep(rule, built))
    if not found and not refused:
        return Fused(result, explanations, (), (), ())
    loaded = {a.key for a in found}
    merged, explained = absorb(result, explanations, model=model, loaded=loaded, consumed=taken)
    return Fused(merged, explained, tuple(found), tuple(steps), _notes(found, refused))


def _renamed(key: str, renamings: Sequence[KeyRenaming]) -> tuple[str, ...]:
    """The names a fusion is tried on: the aligned key, then the library's renamings of it."""
    renamed = key
    for renaming in renamings:
        renamed = rename_key(renamed, renaming)
    return (key,) if renamed == key else (key, renamed)


def _groups(
    fusion: KeyFusion,
    candidates: Mapping[str, tuple[str, ...]],
    taken: set[str],
    missing: set[str],
    model: TensorIndex,
    base: str | None,
) -> dict[str, dict[int, list[str]]]:
    """Missing model key -> source pattern number -> the aligned keys it collects."""
    groups: dict[str, dict[int, list[str]]] = {}
    for key, names in candidates.items():
        if key in taken:
            continue
        for name in names:
            hit = _target(fusion, name, model, base)
            if hit is not None and hit[0] in missing:
                groups.setdefault(hit[0], {}).setdefault(hit[1], []).append(key)
                break
    return groups


def _target(
    fusion: KeyFusion, name: str, model: TensorIndex, base: str | None
) -> tuple[str, int] | None:
    """(model key, source pattern number) the library's converter gives ``name``, if any."""
    scoped = scope_key(name, fusion.scope_prefix, fusion.base_model_prefix)
    if scoped is None:
        return None
    prefix, rest = scoped
    hit = compiled(fusion.pattern).search(rest)
    if hit is None:
        return None
    group = next(g for g, value in hit.groupdict().items() if value is not None)
    target = prefix + rest.replace(hit.group(0), fusion.target, 1)
    if base:
        target = fix_base_prefix(target, base, model)
    return target, int(group[1:])


def _build(
    fusion: KeyFusion,
    target: str,
    by_pattern: Mapping[int, list[str]],
    checkpoint: TensorIndex,
    model: TensorIndex,
    sources: Mapping[str, str],
) -> Adaptation | str:
    """The adaptation building ``target``, or why it is left as it is."""
    ordered: list[list[_Source]] = []
    for number in sorted(by_pattern):  # Concatenate follows the library's pattern order
        collected = [
            _source(fusion.source_patterns[number], key, sources) for key in by_pattern[number]
        ]
        ordered.append(sorted(collected, key=lambda s: s.order))
    counts = {len(group) for group in ordered}
    if len(ordered) != len(fusion.source_patterns):
        absent = [p for n, p in enumerate(fusion.source_patterns) if n not in by_pattern]
        return f"the checkpoint has no tensor matching {', '.join(absent)}"
    experts = [[s.index for s in group] for group in ordered]
    if len(counts) != 1 or any(e != [str(i) for i in range(len(e))] for e in experts):
        return (
            "its per-expert tensors are not numbered 0 to N-1 for every part "
            f"({'; '.join(', '.join(e) for e in experts)}): transformers would stack them "
            "in another expert's place"
        )
    shapes = [[checkpoint.tensors[s.aligned].shape for s in group] for group in ordered]
    shape = fused_shape(fusion.steps, shapes)
    want = model.tensors[target].shape
    if shape != want:
        got = "tensors of unequal shapes" if shape is None else str(list(shape))
        ops = ", ".join(fusion.operations)
        return f"{ops} of these tensors gives {got}, the model holds {list(want)}"
    originals = tuple(s.original for group in ordered for s in group)
    detail = (
        f"Built as transformers loads it: {', '.join(fusion.operations)} of {len(originals)} "
        f"checkpoint tensors ({len(ordered[0])} experts x {len(ordered)} parts, parts in the "
        f"order {', '.join(fusion.source_patterns)})."
    )
    return Adaptation(
        key=target,
        adapter=CONVERSION,
        operation=LIBRARY_FUSION,
        checkpoint_keys=originals,
        detail=detail,
        shape=tuple(want),
        dim=fusion.steps[1][1] if len(fusion.steps) > 1 else 0,
        start=len(ordered),
    )


def _source(pattern: str, key: str, sources: Mapping[str, str]) -> _Source:
    original = sources.get(key, key)
    head, _, tail = pattern.partition("*.")
    index = ""
    if tail:
        hit = compiled(re.escape(head) + r"(.*?)\." + re.escape(tail)).search(key)
        index = hit.group(1) if hit else ""
    return _Source(natural_key(original), original, key, index)


def natural_key(key: str) -> tuple[tuple[int, int | str, int], ...]:
    """transformers' ``dot_natural_key``: digits compare as numbers (``experts.2`` before
    ``experts.10``), the order its loader collects one tensor per expert in.

    Example:
        >>> sorted(["e.10.w", "e.2.w"], key=natural_key)
        ['e.2.w', 'e.10.w']
    """
    parts: list[tuple[int, int | str, int]] = []
    for part in key.split("."):
        if part.isdigit():
            parts.append((0, int(part), -1))
        else:
            text = part.rstrip("0123456789")
            digits = part[len(text) :]
            parts.append((1, text, int(digits) if digits else -1))
    return tuple(parts)


def fused_shape(
    steps: Sequence[tuple[str, int]], groups: Sequence[Sequence[tuple[int, ...]]]
) -> tuple[int, ...] | None:
    """The shape ``MergeModulelist(dim=0)`` then ``Concatenate(dim)`` give these tensors
    (one list per source pattern), or None when torch would refuse them (unequal shapes).

    Example:
        >>> fused_shape([("MergeModulelist", 0), ("Concatenate", 1)], [[(4, 8)] * 2] * 2)
        (2, 8, 8)
    """
    stacked: list[tuple[int, ...]] = []
    for group in groups:
        if len(set(group)) != 1:
            return None
        stacked.append((len(group), *group[0]))
    if len(steps) == 1 or steps[1][0] != CONCATENATE:
        return stacked[0] if len(stacked) == 1 and steps[0][0] == STACK else None
    dim = steps[1][1]
    first = stacked[0]
    if any(
        len(s) != len(first) or s[:dim] + s[dim + 1 :] != first[:dim] + first[dim + 1 :]
        for s in stacked
    ):
        return None
    return (*first[:dim], sum(s[dim] for s in stacked), *first[dim + 1 :])


def _notes(found: Sequence[Adaptation], refused: Mapping[str, str]) -> tuple[str, ...]:
    notes = []
    if found:
        keys = [a.key for a in found]
        sources = sum(len(a.checkpoint_keys) for a in found)
        listed = ", ".join(keys[:_MAX_LISTED]) + (
            f", ... {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
        )
        notes.append(
            f"Fused {sources} per-expert checkpoint tensors into {len(keys)} model tensors as "
            f"transformers does at load time ({listed}); keys.adapted lists each with its "
            "sources, and a merge builds them with transformers' own operations."
        )
    for key, why in list(refused.items())[:_MAX_LISTED]:
        notes.append(f"{key!r} was not fused from the checkpoint's per-expert tensors: {why}.")
    if len(refused) > _MAX_LISTED:
        notes.append(
            f"{len(refused) - _MAX_LISTED} more fused keys were left for the same kind of reasons."
        )
    return tuple(notes)


__all__ = ["CONVERSION", "LIBRARY_FUSION", "Fused", "apply_fusions", "fused_shape", "natural_key"]
