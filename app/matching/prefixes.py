"""Learn candidate prefix transforms (strip one, add another) from the two key sets themselves."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from app.tensors import TensorIndex, TensorKind

KNOWN_PREFIXES = (
    "module.",  # DataParallel / DistributedDataParallel
    "_orig_mod.",  # torch.compile
    "model.",  # Lightning, many trainers
    "encoder.",
    "backbone.",
    "backbone.body.",  # torchvision detection models
    "base_model.",
    "bert.",  # transformers base_model_prefix values
    "roberta.",
    "transformer.",
    "vit.",
    "net.",
)
"""Prefixes tried whenever one side's keys start with them, besides the learned ones."""

MAX_PREFIX_PARTS = 3
"""The most dotted parts a learned prefix has (``backbone.body.`` has two)."""

MAX_SUFFIX_FANOUT = 16
"""A suffix shared by more model keys than this (``weight``) carries no evidence; skipped."""

MAX_LEARNED = 12
"""The most learned (strip, add) pairs kept for exact scoring, by evidence."""

MAX_LEARNING_KEYS = 2048
"""Learning looks at an evenly spaced sample of this many checkpoint keys at most; every
candidate is then scored exactly on all keys."""

PrefixPair = tuple[str, str]
"""(prefix to strip from checkpoint keys, prefix to add); ``""`` means none."""


def _splits(key: str) -> Iterable[tuple[str, str]]:
    """(prefix, rest) for prefixes of 0..MAX_PREFIX_PARTS dotted parts, rest non-empty."""
    yield "", key
    pos = 0
    for _ in range(MAX_PREFIX_PARTS):
        pos = key.find(".", pos) + 1
        if pos == 0 or pos == len(key):
            return
        yield key[:pos], key[pos:]


def _leading(keys: Iterable[str]) -> set[str]:
    """Every prefix of up to MAX_PREFIX_PARTS dotted parts (with its dot) of the keys."""
    return {prefix for key in keys for prefix, _ in _splits(key) if prefix}


def learn_prefix_pairs(checkpoint: TensorIndex, model: TensorIndex) -> list[PrefixPair]:
    """Candidate (strip, add) pairs, learned from common dotted suffixes, best evidence first.

    For every checkpoint key ``cp + s`` and model key ``mp + s`` with the same shape and a
    common rest ``s``, the pair ``(cp, mp)`` gains the model tensor's parameter elements as
    evidence. Lookups go through an index of model rests, so the cost is linear in the number
    of keys (times ``MAX_PREFIX_PARTS``), never checkpoint keys times model keys, and large
    checkpoints are sampled (``MAX_LEARNING_KEYS``).

    Args:
        checkpoint: The checkpoint index.
        model: The model index.

    Returns:
        Up to ``MAX_LEARNED`` pairs with evidence, excluding the identity ``("", "")``.

    Example:
        >>> from app.tensors import TensorInfo
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos([TensorInfo("backbone.body.conv1.weight", (4,), "f", p)])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("module.conv1.weight", (4,), "f")])
        >>> learn_prefix_pairs(ckpt, model)[0]
        ('module.', 'backbone.body.')
    """
    infos = list(checkpoint)
    sample = infos[:: max(1, len(infos) // MAX_LEARNING_KEYS)]
    wanted = {rest for info in sample for _, rest in _splits(info.key)}
    rests: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for info in model:
        for prefix, rest in _splits(info.key):
            if rest in wanted:
                rests[rest].append((prefix, info.key))
    evidence: Counter[PrefixPair] = Counter()
    support: Counter[PrefixPair] = Counter()
    for info in sample:
        for strip, rest in _splits(info.key):
            found = rests.get(rest, ())
            if not found or len(found) > MAX_SUFFIX_FANOUT:
                continue
            for add, model_key in found:
                target = model.tensors[model_key]
                if target.shape != info.shape or (strip, add) == ("", ""):
                    continue
                support[(strip, add)] += 1
                if target.kind is TensorKind.PARAMETER:
                    evidence[(strip, add)] += target.numel
    ranked = sorted(support, key=lambda pair: (-evidence[pair], -support[pair], pair))
    return [pair for pair in ranked if _minimal(pair)][:MAX_LEARNED]


def _minimal(pair: PrefixPair) -> bool:
    """False for ``("module.layer4.", "backbone.layer4.")``: ``("module.", "backbone.")``
    restricted to one module, which adds nothing but noise to the alternatives."""
    strip_prefix, add_prefix = pair
    if not (strip_prefix and add_prefix):
        return True
    return strip_prefix.split(".")[-2] != add_prefix.split(".")[-2]


def known_prefix_pairs(checkpoint: TensorIndex, model: TensorIndex) -> list[PrefixPair]:
    """Pairs from ``KNOWN_PREFIXES`` that apply: strip one the checkpoint keys start with, add
    one the model keys start with, and each such strip combined with each such add."""
    leading_ckpt, leading_model = _leading(checkpoint.tensors), _leading(model.tensors)
    strips = [p for p in KNOWN_PREFIXES if p in leading_ckpt]
    adds = [p for p in KNOWN_PREFIXES if p in leading_model]
    pairs = [(s, "") for s in strips] + [("", a) for a in adds]
    pairs += [(s, a) for s in strips for a in adds if s != a]
    return pairs


def candidate_pairs(checkpoint: TensorIndex, model: TensorIndex) -> list[PrefixPair]:
    """The identity, then learned pairs, then known pairs; without duplicates."""
    pairs = [
        ("", ""),
        *learn_prefix_pairs(checkpoint, model),
        *known_prefix_pairs(checkpoint, model),
    ]
    return list(dict.fromkeys(pairs))
