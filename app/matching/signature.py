"""Shape signatures: a small, prefix-free summary of a tensor index that ranks cheaply.

Ranking a checkpoint against ~2,100 architectures cannot run the matching engine 2,100
times, so each architecture is reduced once (when the catalogue index is built) to its
tensors grouped by *folded key* (the last ``FOLD_DEPTH`` parts of the key, block numbers
replaced by ``#``) and shape. Folding drops the prefixes a checkpoint adds or lacks
(``module.``, ``model.``, ``backbone.body.``) and makes repeated blocks comparable, so a
checkpoint is compared with a signature by counting, never by aligning keys.

A signature also keeps the few tensors that reveal constructor arguments (the classifier,
the stem convolution, an image position table), the integer sizes of a transformers config
and the depth of each repeated block, so ``app.matching.inference`` can infer the arguments
a checkpoint was built with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.tensors import ArchitectureIndex, TensorIndex, TensorKind

FOLD_DEPTH = 3
"""Key parts kept by ``fold_key``: enough to tell ``attn.qkv.weight`` from ``mlp.fc1.weight``,
few enough that a checkpoint's extra or missing prefixes fall away."""

MAX_BLOCK_DIGITS = 4
"""Longer digit runs are names, not block numbers (as in ``app.matching.tree``)."""

Shape = tuple[int, ...]
Group = tuple[str, Shape, int]
"""(folded key, shape, how many tensors of the index have both), in first-seen order."""


def _is_block(part: str) -> bool:
    return part.isascii() and part.isdigit() and len(part) <= MAX_BLOCK_DIGITS


def fold_key(key: str) -> str:
    """The last ``FOLD_DEPTH`` parts of ``key``, with block numbers replaced by ``#``.

    Example:
        >>> fold_key("module.encoder.layer.11.attention.self.query.weight")
        'self.query.weight'
        >>> fold_key("layer1.0.conv1.weight")
        '#.conv1.weight'
    """
    parts = key.split(".")[-FOLD_DEPTH:]
    return ".".join("#" if _is_block(p) else p for p in parts)


def group_tensors(index: TensorIndex) -> tuple[Group, ...]:
    """The tensors of ``index`` counted by (folded key, shape), in first-seen order."""
    counts: dict[tuple[str, Shape], int] = {}
    for info in index:
        pair = (fold_key(info.key), info.shape)
        counts[pair] = counts.get(pair, 0) + 1
    return tuple((fold, shape, n) for (fold, shape), n in counts.items())


def count_blocks(keys: Iterable[str]) -> dict[str, int]:
    """How many blocks each repeated container holds: ``{"encoder.layer": 12}``.

    A container is named by the (up to) two parts before a block number, earlier block
    numbers folded, so ``layer1.0`` and ``stages.2.blocks.5`` are ``layer1`` and
    ``#.blocks``; the count is the number of distinct block numbers seen under it.
    """
    seen: dict[str, set[str]] = {}
    for key in keys:
        parts = key.split(".")[:-1]
        for i, part in enumerate(parts):
            if _is_block(part) and i > 0:
                container = ".".join("#" if _is_block(p) else p for p in parts[max(0, i - 2) : i])
                seen.setdefault(container, set()).add(part)
    return {container: len(blocks) for container, blocks in seen.items()}


@dataclass(frozen=True, slots=True)
class Anchor:
    """A tensor whose shape states a constructor argument.

    Attributes:
        fold: Its folded key.
        shape: Its shape in the default build.
        kwarg: The constructor argument it states (``num_classes``, ``in_chans``, ``img_size``).
        default: That argument's value in the default build, when known.
    """

    fold: str
    shape: Shape
    kwarg: str
    default: int | None = None


@dataclass(frozen=True, slots=True)
class ArchitectureSignature:
    """One catalogue architecture, reduced for ranking and argument inference.

    Attributes:
        name: Qualified name (``timm:convnext_tiny``).
        parameter_count: Elements over the default build's parameters.
        groups: Every tensor of the default build's state_dict, grouped (see ``Group``).
        head: The classifier weight (states ``num_classes``), if any.
        stem: The first convolution (states the input channels), if the source takes them.
        position: An image position table (states the image size), if any.
        patch: The stem's kernel size, the patch size of a ViT (0 when unknown).
        config: A transformers config's integer fields (``hidden_size``...), else empty.
        blocks: ``count_blocks`` of the default build.
        prior: Pretrained weights its library publishes for it: the tie-break between
            architectures a checkpoint fits equally well (``deit_small_patch16_224`` and
            ``vit_small_patch16_224`` are the same network).
    """

    name: str
    parameter_count: int
    groups: tuple[Group, ...]
    head: Anchor | None = None
    stem: Anchor | None = None
    position: Anchor | None = None
    patch: int = 0
    config: Mapping[str, int] = field(default_factory=dict)
    blocks: Mapping[str, int] = field(default_factory=dict)
    prior: int = 0

    @property
    def source(self) -> str:
        """The source part of the name."""
        return self.name.partition(":")[0]

    def to_json(self, fold_ids: dict[str, int]) -> dict[str, Any]:
        """A compact JSON form; folded keys become ids into a table shared by the index."""

        def fid(fold: str) -> int:
            return fold_ids.setdefault(fold, len(fold_ids))

        def anchor(a: Anchor | None) -> list[Any] | None:
            return None if a is None else [fid(a.fold), list(a.shape), a.kwarg, a.default]

        return {
            "n": self.name,
            "p": self.parameter_count,
            "g": [[fid(f), list(s), c] for f, s, c in self.groups],
            "h": anchor(self.head),
            "s": anchor(self.stem),
            "i": anchor(self.position),
            "k": self.patch,
            "c": dict(self.config),
            "b": dict(self.blocks),
            "r": self.prior,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], folds: Sequence[str]) -> ArchitectureSignature:
        """The inverse of ``to_json`` with the index's table of folded keys."""

        def anchor(a: list[Any] | None) -> Anchor | None:
            return None if a is None else Anchor(folds[a[0]], tuple(a[1]), a[2], a[3])

        return cls(
            name=data["n"],
            parameter_count=data["p"],
            groups=tuple((folds[f], tuple(s), c) for f, s, c in data["g"]),
            head=anchor(data["h"]),
            stem=anchor(data["s"]),
            position=anchor(data["i"]),
            patch=data["k"],
            config=data["c"],
            blocks=data["b"],
            prior=data["r"],
        )


def signature_of(
    arch: ArchitectureIndex,
    *,
    kwargs: Mapping[str, str],
    num_classes: int | None = None,
    config: Mapping[str, int] | None = None,
    prior: int = 0,
) -> ArchitectureSignature:
    """Reduce an architecture built with its default arguments to its signature.

    Args:
        arch: The default build (``describe(name, {})``).
        kwargs: The argument its source takes for each anchor, by anchor: ``head``,
            ``stem``, ``position`` (``{"head": "num_classes", "stem": "in_chans"}`` for timm);
            an anchor without an argument is not kept.
        num_classes: The default classifier width, when the source says it.
        config: A transformers config's integer fields.
        prior: Pretrained weights published for it.
    """
    from app.matching.placement import resolve_heads, within
    from app.matching.shapes import POSITION_NAMES, find_stem, position_kind

    index = arch.index
    stem_key = find_stem(index)
    stem = index.get(stem_key) if stem_key else None
    heads = resolve_heads(index, arch.head_modules)
    head_weights = [
        i
        for i in index
        if i.kind is TensorKind.PARAMETER
        and len(i.shape) >= 2
        and i.key.endswith(".weight")
        and within(i.key, heads)
        and i.key.split(".")[-2] not in ("bbox_pred", "bbox_regression")
    ]
    if num_classes is not None:
        head_weights = [i for i in head_weights if i.shape[0] == num_classes] or head_weights
    position = next(
        (
            i
            for i in index
            if len(i.shape) >= 2
            and set(i.key.split(".")[-2:]) & POSITION_NAMES
            and position_kind(i.key, i.shape) == "image"
        ),
        None,
    )

    def anchor(role: str, info: Any) -> Anchor | None:
        if info is None or role not in kwargs:
            return None
        default = num_classes if role == "head" else None
        return Anchor(fold_key(info.key), info.shape, kwargs[role], default)

    return ArchitectureSignature(
        name=arch.name,
        parameter_count=index.parameter_numel,
        groups=group_tensors(index),
        head=anchor("head", head_weights[-1] if head_weights else None),
        stem=anchor("stem", stem),
        position=anchor("position", position),
        patch=stem.shape[-1] if stem is not None else 0,
        config=dict(config or {}),
        blocks=count_blocks(index.keys()),
        prior=prior,
    )
