"""Rank catalogue signatures for one checkpoint by counting, before any exact matching.

Three agreements, each an F1 between the checkpoint and an architecture's default build, so
an architecture is neither rewarded for being a small part of the checkpoint nor for
containing it:

- ``shapes``: parameter elements whose (folded key, shape) both sides have. 1.0 when the
  checkpoint is the architecture as built by default.
- ``structure``: tensors whose (folded key, rank) both sides have, whatever the sizes. High
  for a BERT of another width or depth against ``transformers:bert``.
- ``dims``: dimensions that agree between tensors paired by folded key, in order. Among
  architectures of the same structure it prefers the one whose sizes already agree
  (BERT's vocabulary of 30522 over RoBERTa's 50265).

The score is their mean; the caller re-checks the best few with the real matching engine
(``app.catalog_index.closest``), so this only has to put the right ones near the top.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from app.matching.signature import ArchitectureSignature, Shape, count_blocks, fold_key
from app.tensors import TensorIndex


@dataclass(frozen=True, slots=True)
class CheckpointProfile:
    """A checkpoint's tensors counted the way signatures are (built once per ranking)."""

    by_shape: Counter[tuple[str, Shape]]
    by_rank: Counter[tuple[str, int]]
    by_fold: dict[str, list[tuple[Shape, int]]]
    elements: int
    tensors: int
    dims: int
    blocks: dict[str, int]


def common_prefix(keys: Sequence[str]) -> str:
    """The dotted prefix every key shares and none ends at (``module.``, ``model.``), or "".

    Folding keeps the last parts of a key, so a prefix only reaches the folded form of short
    keys (``module.fc.weight``, ``module.cls_token``); dropping a shared one first keeps those
    comparable too.
    """
    if len(keys) < 2:
        return ""
    parts = keys[0].split(".")[:-1]
    for key in keys[1:]:
        other = key.split(".")[:-1]
        size = 0
        while size < min(len(parts), len(other)) and parts[size] == other[size]:
            size += 1
        parts = parts[:size]
    return ".".join(parts) + "." if parts else ""


def profile_of(index: TensorIndex) -> CheckpointProfile:
    """Count a checkpoint's tensors by folded key (a prefix all keys share dropped) and shape."""
    keys = index.keys()
    cut = len(common_prefix(keys))
    by_shape: Counter[tuple[str, Shape]] = Counter()
    for info in index:
        by_shape[(fold_key(info.key[cut:]), info.shape)] += 1
    by_rank: Counter[tuple[str, int]] = Counter()
    by_fold: dict[str, list[tuple[Shape, int]]] = {}
    for (fold, shape), n in by_shape.items():
        by_rank[(fold, len(shape))] += n
        by_fold.setdefault(fold, []).append((shape, n))
    return CheckpointProfile(
        by_shape=by_shape,
        by_rank=by_rank,
        by_fold=by_fold,
        elements=sum(math.prod(s) * n for (_f, s), n in by_shape.items()),
        tensors=sum(by_shape.values()),
        dims=sum(len(s) * n for (_f, s), n in by_shape.items()),
        blocks=count_blocks(k[cut:] for k in keys),
    )


@dataclass(frozen=True, slots=True)
class Score:
    """How well one architecture's default build agrees with a checkpoint (0 to 1 each).

    Attributes:
        name: The architecture.
        shapes: F1 of parameter elements with the same folded key and shape.
        structure: F1 of tensors with the same folded key and rank.
        dims: F1 of agreeing dimensions between paired tensors.
        loaded_estimate: The architecture's elements a default build would load (the
            ``shapes`` agreement on its side only), an estimate of the loaded fraction.
        prior: The signature's prior, for ties.
    """

    name: str
    shapes: float
    structure: float
    dims: float
    loaded_estimate: float
    prior: int

    @property
    def value(self) -> float:
        """The ranking score: the mean of the three agreements."""
        return (self.shapes + self.structure + self.dims) / 3


def score(profile: CheckpointProfile, signature: ArchitectureSignature) -> Score:
    """Score one signature against a checkpoint profile (see the module docstring)."""
    shared_elements = arch_elements = 0
    shared_tensors = arch_tensors = 0
    arch_dims = 0
    by_rank: Counter[tuple[str, int]] = Counter()
    by_fold: dict[str, list[tuple[Shape, int]]] = {}
    for fold, shape, n in signature.groups:
        size = math.prod(shape)
        arch_elements += size * n
        arch_tensors += n
        arch_dims += len(shape) * n
        shared_elements += size * min(n, profile.by_shape.get((fold, shape), 0))
        by_rank[(fold, len(shape))] += n
        by_fold.setdefault(fold, []).append((shape, n))
    for pair, n in by_rank.items():
        shared_tensors += min(n, profile.by_rank.get(pair, 0))
    equal_dims = sum(
        _equal_dims(groups, profile.by_fold[fold])
        for fold, groups in by_fold.items()
        if fold in profile.by_fold
    )
    return Score(
        name=signature.name,
        shapes=_f1(shared_elements, arch_elements, profile.elements),
        structure=_f1(shared_tensors, arch_tensors, profile.tensors),
        dims=_f1(equal_dims, arch_dims, profile.dims),
        loaded_estimate=shared_elements / arch_elements if arch_elements else 0.0,
        prior=signature.prior,
    )


def _f1(shared: int, left: int, right: int) -> float:
    return 2 * shared / (left + right) if left + right else 0.0


def _equal_dims(left: Sequence[tuple[Shape, int]], right: Sequence[tuple[Shape, int]]) -> int:
    """Agreeing dimensions between the tensors of one folded key on both sides, paired in
    order of appearance."""
    return sum(
        n * sum(x == y for x, y in zip(a, b, strict=True))
        for a, b, n in paired(left, right)
        if len(a) == len(b)
    )


def paired(
    left: Sequence[tuple[Shape, int]], right: Sequence[tuple[Shape, int]]
) -> Iterator[tuple[Shape, Shape, int]]:
    """The tensors of one folded key on both sides paired in order of appearance, as
    (left shape, right shape, how many such pairs): counts expand without building lists."""
    i = j = 0
    left_rest = left[0][1] if left else 0
    right_rest = right[0][1] if right else 0
    while i < len(left) and j < len(right):
        pairs = min(left_rest, right_rest)
        yield left[i][0], right[j][0], pairs
        left_rest -= pairs
        right_rest -= pairs
        if left_rest == 0:
            i += 1
            left_rest = left[i][1] if i < len(left) else 0
        if right_rest == 0:
            j += 1
            right_rest = right[j][1] if j < len(right) else 0


def rank(profile: CheckpointProfile, signatures: Iterable[ArchitectureSignature]) -> list[Score]:
    """Every signature scored, best first; ties go to the larger prior, then the name.

    Example:
        >>> from app.tensors import TensorInfo
        >>> from app.matching.signature import group_tensors
        >>> idx = TensorIndex.from_infos([TensorInfo("fc.weight", (10, 4), "float32")])
        >>> sig = ArchitectureSignature("plugin:tiny", 40, group_tensors(idx))
        >>> [(s.name, round(s.value, 2)) for s in rank(profile_of(idx), [sig])]
        [('plugin:tiny', 1.0)]
    """
    scores = [score(profile, s) for s in signatures]
    scores.sort(key=lambda s: (-round(s.value, 6), -s.prior, s.name))
    return scores
