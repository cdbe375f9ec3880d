"""Per-root alignment: a top-level root of the checkpoint that the winning prefix pair leaves
unloaded gets its own pair, when that root's own keys support it.

Files often keep the backbone and the head under different roots (mmpretrain's
``backbone.*`` with ``head.fc.*``); one global (strip, add) pair loads only one of them, and
the head the file has would be reported as new. Each extra pair is written as an anchored
``rename`` transform so ``applied_transforms`` stays a list a user can pass back as options.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from app.enums import TransformKind
from app.errors import InvalidOptionsError
from app.matching.prefixes import PrefixPair
from app.matching.transforms import AUTO, Transform, apply_transforms
from app.tensors import TensorIndex, TensorInfo

MIN_ROOT_SHARE = 0.5
"""A root's own pair must load at least this share of the root's checkpoint elements: a pair
that places a stray tensor or two of a root is noise, not an explanation of the root."""

Targets = Mapping[str, tuple[tuple[int, ...], int]]
"""Model key -> (shape, parameter elements)."""


def _root(key: str) -> str:
    return key.split(".", 1)[0]


def _loads(info: TensorInfo, name: str, targets: Targets) -> bool:
    target = targets.get(name)
    return target is not None and target[0] == info.shape


def _root_pair(
    infos: Sequence[TensorInfo],
    names: Mapping[str, str],
    pairs: Sequence[PrefixPair],
    targets: Targets,
    taken: set[str],
) -> tuple[PrefixPair, dict[str, str], int] | None:
    """The pair that loads the most of one root's keys into model keys not yet taken."""
    root = _root(infos[0].key)
    size = sum(i.numel for i in infos)
    best: tuple[PrefixPair, dict[str, str], int] | None = None
    for strip_prefix, add_prefix in pairs:
        if not strip_prefix.startswith(root + "."):
            continue
        renamed = {
            i.key: add_prefix + i.key[len(strip_prefix) :]
            for i in infos
            if i.key.startswith(strip_prefix)
        }
        loaded = sum(
            targets[n][1]
            for i in infos
            if (n := renamed.get(i.key, "")) not in taken and _loads(i, n, targets)
        )
        if loaded and loaded >= size * MIN_ROOT_SHARE and (best is None or loaded > best[2]):
            best = ((strip_prefix, add_prefix), renamed, loaded)
    return best


def _rename_for(
    pair: PrefixPair, renamed: Mapping[str, str], names: Mapping[str, str]
) -> Transform | None:
    """``rename '^<current prefix>' -> '<add>'`` for the root's keys, after the earlier steps."""
    strip_prefix, add_prefix = pair
    orig = next(iter(renamed))
    rest = orig[len(strip_prefix) :]
    current = names[orig]
    if not current.endswith(rest) or "\\" in add_prefix:
        return None
    prefix = current[: len(current) - len(rest)]
    return Transform(
        TransformKind.RENAME, pattern="^" + re.escape(prefix), replacement=add_prefix, origin=AUTO
    )


def extend_by_root(
    checkpoint: TensorIndex,
    targets: Targets,
    *,
    names: Mapping[str, str],
    transforms: Sequence[Transform],
    pairs: Sequence[PrefixPair],
) -> tuple[dict[str, str], list[Transform]]:
    """Give each top-level root that loads nothing under ``names`` its own pair.

    A root qualifies when none of its keys load under the winning transforms and a pair whose
    strip prefix lies inside the root loads at least ``MIN_ROOT_SHARE`` of the root's elements
    into model keys no other key fills. The pair becomes an anchored rename applied after
    ``transforms``; it is kept only if applying every transform in order gives exactly the
    per-root names (no rename reaches another root's keys) without collisions.

    Args:
        checkpoint: The checkpoint index.
        targets: Model key -> (shape, parameter elements).
        names: Original key -> name under the winning transforms.
        transforms: The winning transforms.
        pairs: The candidate pairs (``candidate_pairs``).

    Returns:
        The names with every accepted root renamed, and all transforms in order.

    Example:
        >>> from app.matching.transforms import strip
        >>> ckpt = TensorIndex.from_infos(
        ...     [TensorInfo("backbone.conv.w", (4,), "f"), TensorInfo("head.fc.w", (2,), "f")]
        ... )
        >>> targets = {"conv.w": ((4,), 4), "fc.w": ((2,), 2)}
        >>> names = {"backbone.conv.w": "conv.w", "head.fc.w": "head.fc.w"}
        >>> new, steps = extend_by_root(
        ...     ckpt, targets, names=names, transforms=[strip("backbone.")], pairs=[("head.", "")]
        ... )
        >>> new["head.fc.w"], steps[-1].kind.value
        ('fc.w', 'rename')
    """
    by_root: dict[str, list[TensorInfo]] = defaultdict(list)
    for info in checkpoint:
        by_root[_root(info.key)].append(info)
    current = dict(names)
    steps = list(transforms)
    taken = {n for i in checkpoint if _loads(i, n := current[i.key], targets)}
    identity = {k: k for k in checkpoint.tensors}
    for infos in by_root.values():
        if any(_loads(i, current[i.key], targets) for i in infos):
            continue
        found = _root_pair(infos, current, pairs, targets, taken)
        if found is None:
            continue
        pair, renamed, _ = found
        rename = _rename_for(pair, renamed, current)
        if rename is None:
            continue
        wanted = {**current, **renamed}
        try:
            applied, _ = apply_transforms(identity, [*steps, rename])
        except InvalidOptionsError:
            continue
        if applied != wanted:
            continue
        current, steps = wanted, [*steps, rename]
        taken |= {n for i in infos if _loads(i, n := current[i.key], targets)}
    return current, steps
