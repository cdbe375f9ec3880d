"""detectron2-style suffix matching: each checkpoint key goes to the model key with the longest
common dotted suffix and the same shape; an ambiguous key is reported, never guessed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from app.tensors import TensorIndex


@dataclass(frozen=True, slots=True)
class SuffixMatch:
    """The outcome of suffix matching.

    Attributes:
        names: Original checkpoint key -> model key, for the keys that matched one model key.
        ambiguous: Original checkpoint keys whose longest suffix fits several model keys (or
            that tie with another checkpoint key for the same model key), checkpoint order.
    """

    names: Mapping[str, str]
    ambiguous: tuple[str, ...]


def _suffixes(key: str) -> list[str]:
    """Dotted suffixes of ``key``, longest first: ``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``."""
    parts = key.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def match_by_suffix(
    names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex
) -> SuffixMatch:
    """Map checkpoint keys to model keys by their longest common dotted suffix and equal shape.

    A key whose current name is a model key of the same shape keeps it (an exact match is the
    longest suffix). Lookups go through an index of (suffix, shape), so the cost is linear in
    the number of keys times their depth.

    Args:
        names: Original checkpoint key -> current name (after earlier transforms).
        checkpoint: The checkpoint index, by original key (for shapes).
        model: The model index.

    Returns:
        The matched names and the ambiguous keys.

    Example:
        >>> from app.tensors import TensorInfo
        >>> model = TensorIndex.from_infos([TensorInfo("backbone.conv.weight", (2,), "float32")])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("net.conv.weight", (2,), "float32")])
        >>> dict(match_by_suffix({"net.conv.weight": "net.conv.weight"}, ckpt, model).names)
        {'net.conv.weight': 'backbone.conv.weight'}
    """
    by_suffix: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
    for info in model:
        for suffix in _suffixes(info.key):
            by_suffix[(suffix, info.shape)].append(info.key)
    proposals: dict[str, list[tuple[int, str]]] = defaultdict(list)  # model key -> (depth, orig)
    ambiguous: set[str] = set()
    for orig, name in names.items():
        shape = checkpoint.tensors[orig].shape
        exact = model.get(name)
        if exact is not None and exact.shape == shape:
            proposals[name].append((name.count(".") + 2, orig))  # beats any suffix
            continue
        for suffix in _suffixes(name):
            found = by_suffix.get((suffix, shape))
            if found:
                if len(found) == 1:
                    proposals[found[0]].append((suffix.count(".") + 1, orig))
                else:
                    ambiguous.add(orig)
                break
    matched: dict[str, str] = {}
    for model_key, offers in proposals.items():
        best = max(depth for depth, _ in offers)
        winners = [orig for depth, orig in offers if depth == best]
        if len(winners) == 1:
            matched[winners[0]] = model_key
        else:
            ambiguous.update(winners)
    return SuffixMatch(
        names={orig: matched[orig] for orig in names if orig in matched},
        ambiguous=tuple(orig for orig in names if orig in ambiguous),
    )
