"""Align checkpoint keys to model keys: automatically (the prefix transform that loads the most
parameter elements) or with the explicit options, and score every candidate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.enums import TransformKind
from app.matching.prefixes import PrefixPair, candidate_pairs
from app.matching.roots import extend_by_root
from app.matching.suffix import match_by_suffix
from app.matching.transforms import (
    AUTO,
    AppliedStep,
    Transform,
    add,
    apply_transforms,
    strip,
)
from app.matching.twins import NEAR_TIE_SHARE, TwinChoice, settle_prefix_twins
from app.tensors import TensorIndex, TensorInfo, TensorKind

MAX_ALTERNATIVES = 5
"""The most alternatives reported."""

MIN_ALTERNATIVE_SHARE = 0.5
"""An alternative is listed only if it loads at least this share of what the winner loads;
pairs that place one module somewhere else are noise, not choices."""


@dataclass(frozen=True, slots=True)
class ScoredAlignment:
    """One candidate alignment and what it would load."""

    steps: tuple[AppliedStep, ...]
    loaded_parameter_numel: int
    matched: int


@dataclass(frozen=True, slots=True)
class Alignment:
    """The alignment used for a check.

    Attributes:
        steps: The transforms applied, in order, with the keys each changed.
        names: Original checkpoint key -> aligned key, for keys placed among model keys.
        leftover: Original keys with no place (ambiguous suffix matches, or a name taken by a
            suffix match); they are unexpected.
        ambiguous: Original keys ``match_by_suffix`` could not map to one model key.
        alternatives: Other scored alignments, best first.
        notes: Plain sentences on what was done.
        twins: How a tie between twin copies of the weights (MoCo's query and key encoders)
            was settled, if the file holds such copies.
        suggestions: ``key_map`` pairs (stored key, model key) found by structure but not
            applied; each is complete on its own, ready for the ``key_map`` option.
    """

    steps: tuple[AppliedStep, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    leftover: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    alternatives: tuple[ScoredAlignment, ...] = ()
    notes: tuple[str, ...] = ()
    twins: TwinChoice | None = None
    suggestions: tuple[tuple[tuple[str, str], ...], ...] = ()

    def aligned_index(self, checkpoint: TensorIndex) -> TensorIndex:
        """The checkpoint's placed tensors under their aligned keys, in checkpoint order."""
        return TensorIndex.from_infos(
            [
                TensorInfo(self.names[info.key], info.shape, info.dtype, info.kind)
                for info in checkpoint
                if info.key in self.names
            ]
        )

    @property
    def sources(self) -> dict[str, str]:
        """Aligned key -> original checkpoint key."""
        return {aligned: orig for orig, aligned in self.names.items()}


def score_names(
    names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex
) -> tuple[int, int]:
    """(model parameter elements that load, model keys that load) under ``names``."""
    loaded = matched = 0
    for orig, aligned in names.items():
        target = model.get(aligned)
        if target is not None and target.shape == checkpoint.tensors[orig].shape:
            matched += 1
            if target.kind is TensorKind.PARAMETER:
                loaded += target.numel
    return loaded, matched


def _pair_transforms(pair: PrefixPair) -> list[Transform]:
    strip_prefix, add_prefix = pair
    transforms = [strip(strip_prefix, origin=AUTO)] if strip_prefix else []
    return transforms + ([add(add_prefix, origin=AUTO)] if add_prefix else [])


def _score_pair(
    pair: PrefixPair, checkpoint: TensorIndex, targets: Mapping[str, tuple[tuple[int, ...], int]]
) -> tuple[int, int] | None:
    """Fast exact score of one (strip, add) pair; None when two keys collide."""
    strip_prefix, add_prefix = pair
    seen: set[str] = set()
    loaded = matched = 0
    for info in checkpoint:
        key = info.key
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix) :]
        key = add_prefix + key
        if key in seen:
            return None
        seen.add(key)
        target = targets.get(key)
        if target is not None and target[0] == info.shape:
            matched += 1
            loaded += target[1]
    return loaded, matched


def auto_align(checkpoint: TensorIndex, model: TensorIndex) -> Alignment:
    """Choose the prefix transform that loads the most model parameter elements.

    Candidates are the identity, pairs learned from common suffixes and the known prefixes
    (see ``app.matching.prefixes``). Ties go to fewer transforms; near-ties (within
    ``NEAR_TIE_SHARE``) are named in the notes, and the best others are kept as alternatives.
    A near-tie between twin copies of the same weights (other checkpoint keys loading the same
    model keys) is settled by ``app.matching.twins``; a top-level root the winner leaves
    unloaded may get its own pair (``app.matching.roots``).

    Example:
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos([TensorInfo("fc.weight", (2, 2), "float32", p)])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("module.fc.weight", (2, 2), "float32")])
        >>> [s.transform.describe() for s in auto_align(ckpt, model).steps]
        ["strip 'module.'"]
    """
    targets = {i.key: (i.shape, i.numel if i.kind is TensorKind.PARAMETER else 0) for i in model}
    pairs = candidate_pairs(checkpoint, model)
    scored: list[tuple[int, int, PrefixPair]] = []
    for pair in pairs:
        result = _score_pair(pair, checkpoint, targets)
        if result is not None:
            scored.append((result[0], result[1], pair))
    scored.sort(key=lambda s: (-s[0], -s[1], len(_pair_transforms(s[2])), s[2]))
    best_loaded, _, best_pair = scored[0]
    twins = None
    if best_loaded == 0:
        best_pair = ("", "")
    else:
        twins, best_pair = settle_prefix_twins(scored, checkpoint, targets)
        best_loaded = next(s[0] for s in scored if s[2] == best_pair)
    identity = {k: k for k in checkpoint.tensors}
    transforms = _pair_transforms(best_pair)
    names, steps = apply_transforms(identity, transforms)
    if best_loaded:
        names, combined = extend_by_root(
            checkpoint, targets, names=names, transforms=transforms, pairs=pairs
        )
        if len(combined) > len(transforms):
            names, steps = apply_transforms(identity, combined)
            best_loaded = score_names(names, checkpoint, model)[0]
    shown = [
        s
        for s in scored
        if s[2] != best_pair and best_loaded and s[0] >= best_loaded * MIN_ALTERNATIVE_SHARE
    ][:MAX_ALTERNATIVES]
    alternatives = tuple(
        _scored(identity, loaded, matched, pair) for loaded, matched, pair in shown
    )
    notes = _auto_notes(steps, best_loaded, alternatives, candidates=len(scored), twins=twins)
    return Alignment(steps=steps, names=names, alternatives=alternatives, notes=notes, twins=twins)


def _scored(
    identity: Mapping[str, str], loaded: int, matched: int, pair: PrefixPair
) -> ScoredAlignment:
    _, steps = apply_transforms(identity, _pair_transforms(pair))
    return ScoredAlignment(steps, loaded, matched)


def describe_steps(steps: Sequence[AppliedStep]) -> str:
    """``strip 'module.' then add 'backbone.body.'`` or ``no transform``."""
    return " then ".join(s.transform.describe() for s in steps) or "no transform"


def _auto_notes(
    steps: tuple[AppliedStep, ...],
    best_loaded: int,
    alternatives: tuple[ScoredAlignment, ...],
    *,
    candidates: int,
    twins: TwinChoice | None,
) -> tuple[str, ...]:
    notes: list[str] = []
    if steps:
        changes = ", ".join(f"{s.transform.describe()} ({s.keys_changed} keys)" for s in steps)
        notes.append(
            f"Aligned keys automatically: {changes}; the best of {candidates} candidate "
            f"alignments, loading {best_loaded} parameter elements."
        )
    if twins is not None:
        notes.append(twins.sentence())
    twin_strips = set(twins.others) if twins is not None else set()
    near = [
        a
        for a in alternatives
        if best_loaded
        and a.loaded_parameter_numel >= best_loaded * (1 - NEAR_TIE_SHARE)
        and _strip_of(a.steps) not in twin_strips
    ]
    for alt in near:
        notes.append(
            f"Near-tie: {describe_steps(alt.steps)} would load {alt.loaded_parameter_numel} "
            f"parameter elements against {best_loaded} for {describe_steps(steps)}; check "
            "`alternatives` and pass strip_prefix/add_prefix to choose."
        )
    return tuple(notes)


def _strip_of(steps: Sequence[AppliedStep]) -> str:
    return next(
        (s.transform.prefix for s in steps if s.transform.kind is TransformKind.STRIP_PREFIX), ""
    )


def explicit_align(
    checkpoint: TensorIndex,
    model: TensorIndex,
    *,
    transforms: Sequence[Transform],
    suffix: bool,
) -> Alignment:
    """Apply the explicit key options in order, then ``match_by_suffix`` when asked.

    Raises:
        InvalidOptionsError: A transform maps two checkpoint keys onto one name.
    """
    names, steps = apply_transforms({k: k for k in checkpoint.tensors}, transforms)
    notes = [
        f"Applied {s.transform.describe()} from the options: {s.keys_changed} keys changed."
        for s in steps
    ]
    notes += [
        f"The option {s.transform.describe()} changed no key; check it."
        for s in steps
        if s.keys_changed == 0
    ]
    leftover: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    if suffix:
        found = match_by_suffix(names, checkpoint, model)
        changed = sum(1 for orig, key in found.names.items() if names[orig] != key)
        step = AppliedStep(Transform(TransformKind.MATCH_BY_SUFFIX), changed)
        steps = (*steps, step)
        taken = set(found.names.values())
        placed = {o: found.names.get(o, n) for o, n in names.items()}
        leftover = tuple(o for o, n in names.items() if o not in found.names and n in taken)
        names = {o: n for o, n in placed.items() if o not in leftover}
        ambiguous = found.ambiguous
        notes.append(f"Matched keys by suffix: {changed} keys renamed to a model key.")
        if ambiguous:
            notes.append(
                f"{len(ambiguous)} checkpoint keys match several model keys by suffix and were "
                f"not guessed (see keys.ambiguous), e.g. {ambiguous[0]!r}."
            )
    return Alignment(
        steps=steps, names=names, leftover=leftover, ambiguous=ambiguous, notes=tuple(notes)
    )
