"""What names say in structural pairing: leaf roles, module words and stack positions.

A sequence alignment by shape needs names as evidence twice: to break ties between equally
long alignments and to veto a pair whose names point elsewhere. Numbers in names are not
compared as they are (timm's ``blocks.3`` is torchvision's ``encoder_layer_3``); a member of
a stack gets its rank among its siblings instead, and module names the libraries' converters
equate read as one word (``app.matching.synonyms.MODULE_SYNONYMS``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from app.matching.synonyms import LEAF_SYNONYMS, MODULE_SYNONYMS
from app.tensors import TensorInfo

Position = tuple[int, ...] | None
"""A tensor's rank and stack size in each stack it sits in, outermost first (``blocks.3`` of
12 blocks -> ``(3, 12)``), or None outside any stack. A rank compares only within stacks of one
size: timm's EfficientNet has 7 stages where torchvision has 9 features, so its stage 0 is not
torchvision's stem."""

_NUMBERED = re.compile(r"^(?:(.+)_)?(\d+)$")
"""A component numbered as a stack member: ``3`` (``blocks.3``) or ``encoder_layer_3``."""

MIN_STACK = 3
"""A stack has at least this many numbered siblings: ``ln_1``/``ln_2`` or ``mlp.0``/``mlp.3``
are names, not positions. Two blocks (``layer.0`` and ``layer.1``, each holding several
modules) are a stack too: without their positions they read the same and could be paired
crosswise."""


def role(key: str) -> str:
    """What a tensor is to its layer (``weight``, ``bias``, a norm statistic), old names read
    as today's: only tensors of one role pair."""
    leaf = key.rpartition(".")[2]
    leaf = LEAF_SYNONYMS.get(leaf, leaf)
    if leaf == "weight" or leaf.endswith("_weight"):
        return "weight"
    if leaf == "bias" or leaf.endswith("_bias"):
        return "bias"
    return leaf if leaf in ("running_mean", "running_var", "num_batches_tracked") else "other"


def _numbered(part: str) -> tuple[str, int] | None:
    found = _NUMBERED.match(part)
    return (found.group(1) or "", int(found.group(2))) if found else None


def _ranks(infos: Sequence[TensorInfo]) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(parent path, stem, number) -> the member's rank in its stack (numbers sorted) and the
    stack's size, for stacks of at least ``MIN_STACK`` members, or of blocks
    (``_is_block_pair``): positions compare across libraries whose numbers do not (timm's
    ``blocks.0`` is torchvision's ``encoder_layer_0``)."""
    members: dict[tuple[str, str], set[int]] = defaultdict(set)
    modules: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for info in infos:
        parts = info.key.split(".")[:-1]
        for depth, part in enumerate(parts):
            numbered = _numbered(part)
            if numbered:
                parent = ".".join(parts[:depth])
                members[(parent, numbered[0])].add(numbered[1])
                modules[(parent, *numbered)].add(".".join(parts[depth + 1 :]))
    return {
        (parent, stem, n): (rank, len(numbers))
        for (parent, stem), numbers in members.items()
        if len(numbers) >= MIN_STACK or _is_block_pair(parent, stem, numbers, modules)
        for rank, n in enumerate(sorted(numbers))
    }


def _is_block_pair(
    parent: str, stem: str, numbers: set[int], modules: Mapping[tuple[str, str, int], set[str]]
) -> bool:
    """Two bare-numbered members ``0`` and ``1`` that each hold several modules: a ModuleList
    of two blocks (a 2-layer ViT), whose positions keep the blocks apart, unlike the two
    layers of a Sequential (``stem.0``, ``stem.1``)."""
    return (
        not stem
        and numbers == {0, 1}
        and all(len(modules[(parent, stem, n)]) >= 2 for n in numbers)
    )


def _words(key: str, ranks: Mapping[tuple[str, str, int], tuple[int, int]]) -> frozenset[str]:
    """The module path's named components, plus one token for its position in stacks."""
    words = {MODULE_SYNONYMS.get(p, p) for p in key.split(".")[:-1] if _numbered(p) is None}
    position = _position(key, ranks)
    if position:
        words.add(f"#{position}")
    return frozenset(words)


def _position(key: str, ranks: Mapping[tuple[str, str, int], tuple[int, int]]) -> Position:
    """The ranks of ``key``'s modules in their stacks and the stacks' sizes (outermost first),
    None outside any."""
    parts = key.split(".")[:-1]
    position: list[int] = []
    for depth, part in enumerate(parts):
        numbered = _numbered(part)
        rank = None if numbered is None else ranks.get((".".join(parts[:depth]), *numbered))
        if rank is not None:
            position.extend(rank)
    return tuple(position) or None


def path_words(infos: Sequence[TensorInfo]) -> list[frozenset[str]]:
    """Each tensor's module words and stack position, ranks taken over ``infos``."""
    ranks = _ranks(infos)
    return [_words(i.key, ranks) for i in infos]


def positions(infos: Sequence[TensorInfo]) -> list[Position]:
    """Each tensor's stack position, ranks taken over ``infos``."""
    ranks = _ranks(infos)
    return [_position(i.key, ranks) for i in infos]


_LEAF_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}
"""The order torch's layers register their tensors in (a sorted file puts bias first)."""


def _natural(key: str) -> tuple[tuple[tuple[int, int | str], ...], int, str]:
    module, _, leaf = key.rpartition(".")
    parts = tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", module) if t)
    return parts, _LEAF_ORDER.get(leaf, len(_LEAF_ORDER)), leaf


def registration_order(infos: list[TensorInfo]) -> list[TensorInfo]:
    """A file whose keys are sorted as text (safetensors sorts them: ``blocks.10`` before
    ``blocks.2``, ``bias`` before ``weight``) in numeric order instead, each module's weight
    before its bias: closer to the order modules were registered."""
    return sorted(infos, key=lambda i: _natural(i.key)) if _sorted_as_text(infos) else infos


def _sorted_as_text(infos: Sequence[TensorInfo]) -> bool:
    """Whether the keys are sorted as text within each dtype, the dtypes one after another.

    safetensors writes tensors grouped by dtype, then by name (its ``prepare`` sorts by dtype
    descending, then name), so a BatchNorm's int64 ``num_batches_tracked`` all come first;
    a file saved in registration order repeats its dtypes module after module instead.
    """
    runs: dict[str, list[str]] = {}
    previous: str | None = None
    for info in infos:
        if info.dtype != previous and info.dtype in runs:
            return False  # a dtype that comes back: not grouped
        runs.setdefault(info.dtype, []).append(info.key)
        previous = info.dtype
    return all(keys == sorted(keys) for keys in runs.values())
