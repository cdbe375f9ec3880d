"""Infer the constructor arguments a checkpoint was built with, from shapes alone.

Compared with an architecture's default build (its ``ArchitectureSignature``):

- the classifier's output size gives ``num_classes`` (timm, torchvision);
- the stem convolution's input channels give ``in_chans`` (timm) or ``num_channels``
  (transformers vision configs);
- an image position table's token count gives the image size, with the patch size taken
  from the stem's kernel and the class/distillation tokens from the default table;
- for a transformers config, each integer field whose default value is a dimension of the
  default build takes the dimension it became in the checkpoint (``hidden_size`` 768 ->
  384, ``intermediate_size`` 3072 -> 1536, ``vocab_size``...), fields counting layers take
  the checkpoint's block count, and fields counting heads keep the default head width
  (shapes cannot tell 6 heads of 64 from 12 heads of 32: both load the same tensors).

Every argument set here is one the checkpoint states; the caller reports them as inferred
and checks the build with the real matching engine.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.matching.ranking import CheckpointProfile, paired
from app.matching.signature import Anchor, ArchitectureSignature, Shape

HIDDEN_FIELDS = ("hidden_size", "d_model", "n_embd", "embed_dim", "dim")
"""Config fields holding the model width, first found wins (for the head-width rule)."""

MAX_PREFIX_TOKENS = 8
"""Class, distillation and register tokens a position table may hold besides the patches."""


@dataclass(frozen=True, slots=True)
class Inferred:
    """Constructor arguments read off a checkpoint; empty when the defaults fit."""

    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The inferred argument names, sorted."""
        return sorted(self.kwargs)


def infer_kwargs(profile: CheckpointProfile, signature: ArchitectureSignature) -> Inferred:
    """The arguments under which ``signature``'s architecture matches the checkpoint best.

    Example:
        >>> from app.tensors import TensorIndex, TensorInfo
        >>> from app.matching.ranking import profile_of
        >>> from app.matching.signature import group_tensors
        >>> default = TensorIndex.from_infos([TensorInfo("fc.weight", (1000, 512), "float32")])
        >>> sig = ArchitectureSignature(
        ...     "timm:tiny", 512000, group_tensors(default),
        ...     head=Anchor("fc.weight", (1000, 512), "num_classes", 1000),
        ... )
        >>> ckpt = TensorIndex.from_infos([TensorInfo("model.fc.weight", (10, 512), "float32")])
        >>> infer_kwargs(profile_of(ckpt), sig).kwargs
        {'num_classes': 10}
    """
    kwargs: dict[str, Any] = {}
    if signature.config:
        kwargs.update(_config_sizes(profile, signature))
    if signature.head is not None:
        kwargs.update(_from_head(profile, signature.head))
    if signature.stem is not None:
        kwargs.update(_from_stem(profile, signature.stem))
    if signature.position is not None and signature.patch:
        kwargs.update(_from_position(profile, signature.position, signature.patch))
    return Inferred(kwargs)


def _candidates(profile: CheckpointProfile, anchor: Anchor) -> list[Shape]:
    return [s for s, _n in profile.by_fold.get(anchor.fold, ()) if len(s) == len(anchor.shape)]


def _from_head(profile: CheckpointProfile, anchor: Anchor) -> dict[str, int]:
    # The last fitting tensor: a classifier comes after the layers that share its folded key.
    fitting = [s for s in _candidates(profile, anchor) if s[1:] == anchor.shape[1:]]
    if fitting and fitting[-1][0] != anchor.shape[0]:
        return {anchor.kwarg: fitting[-1][0]}
    return {}


def _from_stem(profile: CheckpointProfile, anchor: Anchor) -> dict[str, int]:
    for shape in _candidates(profile, anchor):
        if (
            shape[1] != anchor.shape[1]
            and shape[:1] + shape[2:] == anchor.shape[:1] + anchor.shape[2:]
        ):
            return {anchor.kwarg: shape[1]}
    return {}


def _from_position(profile: CheckpointProfile, anchor: Anchor, patch: int) -> dict[str, int]:
    """The image size from a position table [..., tokens, width] and the patch size."""
    for shape in _candidates(profile, anchor):
        differing = [i for i, (a, b) in enumerate(zip(shape, anchor.shape, strict=True)) if a != b]
        if differing != [len(shape) - 2]:
            continue
        before, after = anchor.shape[-2], shape[-2]
        grid = math.isqrt(before)
        prefix = before - grid * grid
        side = math.isqrt(max(0, after - prefix))
        if prefix <= MAX_PREFIX_TOKENS and side > 0 and side * side == after - prefix:
            return {anchor.kwarg: side * patch}
    return {}


def _dimension_map(profile: CheckpointProfile, signature: ArchitectureSignature) -> dict[int, int]:
    """Default dimension -> the dimension most often found in its place in the checkpoint."""
    default_by_fold: dict[str, list[tuple[Shape, int]]] = {}
    for fold, shape, n in signature.groups:
        default_by_fold.setdefault(fold, []).append((shape, n))
    votes: dict[int, Counter[int]] = {}
    for fold, groups in default_by_fold.items():
        for a, b, n in paired(groups, profile.by_fold.get(fold, [])):
            if len(a) == len(b):
                for x, y in zip(a, b, strict=True):
                    votes.setdefault(x, Counter())[y] += n
    return {x: counter.most_common(1)[0][0] for x, counter in votes.items()}


def _config_sizes(profile: CheckpointProfile, signature: ArchitectureSignature) -> dict[str, int]:
    config = signature.config
    dims = _dimension_map(profile, signature)
    found: dict[str, int] = {}
    for name, default in config.items():
        if default <= 1 or "head" in name:
            continue
        value = (
            _layers(profile, signature, name, default)
            if "layers" in name
            else dims.get(default, default)
        )
        if value != default:
            found[name] = value
    hidden = next((f for f in HIDDEN_FIELDS if f in config), None)
    for name, default in config.items():
        if "heads" in name and hidden is not None and default > 0:
            width, new_width = config[hidden], found.get(hidden, config[hidden])
            if width % default == 0 and new_width != width and new_width % (width // default) == 0:
                found[name] = new_width // (width // default)
    return found


def _layers(
    profile: CheckpointProfile, signature: ArchitectureSignature, name: str, default: int
) -> int:
    """The checkpoint's block count in the container that holds ``default`` blocks by
    default, preferring one named like the field (``decoder_layers`` -> ``decoder.layers``)."""
    containers = [c for c, n in signature.blocks.items() if n == default and c in profile.blocks]
    if not containers:
        return default
    word = name.split("_")[0]
    containers.sort(key=lambda c: word not in c)
    return profile.blocks[containers[0]]
