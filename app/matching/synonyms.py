"""Leaf synonyms: old names of the same tensor (BERT's TF-converted ``LayerNorm.gamma``).

Shapes alone cannot pair ``gamma`` with ``weight``, and a prefix never changes a leaf, so a
missing ``...LayerNorm.weight`` beside an unexpected ``...LayerNorm.gamma`` of the same shape
in the same module stayed random. transformers renames these at load time
(``_fix_state_dict_key_on_load``, and transformers 5's legacy conversion mapping); this module
does the same, only where the pairing is unambiguous.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from app.enums import TransformKind
from app.matching.transforms import AUTO, AppliedStep, Transform
from app.tensors import TensorIndex

LEAF_SYNONYMS: Mapping[str, str] = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "moving_var": "running_var",
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}
"""Old leaf name -> the name torch modules use today."""

_MODULE_GROUPS: Mapping[str, tuple[str, ...]] = {
    # The norm before attention and the one before the MLP of a transformer block. The
    # libraries' own converters say so: transformers (conversion_mapping.py) renames ln_1 and
    # layer_norm_1 to layernorm_before, ln_2 to layernorm_after, input_layernorm and
    # post_attention_layernorm to layer_norm1/2; timm's _convert_openai_clip renames ln_1 and
    # ln_2 to norm1 and norm2.
    "norm<attention": (
        "norm1", "ln_1", "ln1", "layernorm_before", "layer_norm1", "layer_norm_1",
        "input_layernorm", "attention_norm",
    ),
    "norm<mlp": (
        "norm2", "ln_2", "ln2", "layernorm_after", "layer_norm2", "layer_norm_2",
        "post_attention_layernorm", "ffn_norm",
    ),
    "norm": ("norm", "layernorm", "layer_norm", "ln", "ln_f", "norm_f", "final_layernorm"),
    "attention": ("attn", "attention", "self_attn", "self_attention"),
    "mlp": ("mlp", "ffn", "feed_forward"),
}  # fmt: skip
MODULE_SYNONYMS: Mapping[str, str] = {
    name: word for word, names in _MODULE_GROUPS.items() for name in names
}
"""Module name -> one word for what it is, so that structural pairing reads ``layernorm_before``
(transformers' ViT) and ``norm1`` (timm) as the same module: evidence in names, never a rename
on its own."""


def pair_synonyms(
    names: Mapping[str, str], checkpoint: TensorIndex, model: TensorIndex
) -> tuple[dict[str, str], tuple[AppliedStep, ...]]:
    """Rename old leaves to their synonyms where that loads a tensor the model still misses.

    A key is renamed only if its aligned name is not a model key, the synonym in the same
    module is a model key of the same shape, and no other checkpoint key already takes (or
    would take) that name: a file holding both ``gamma`` and ``weight`` is left alone.

    Args:
        names: Original checkpoint key -> aligned key.
        checkpoint: The checkpoint's tensors (original keys).
        model: The model's tensors.

    Returns:
        The updated names and one step per synonym used (``gamma`` -> ``weight``).

    Example:
        >>> from app.tensors import TensorInfo
        >>> model = TensorIndex.from_infos([TensorInfo("ln.weight", (4,), "float32")])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("ln.gamma", (4,), "float32")])
        >>> pair_synonyms({"ln.gamma": "ln.gamma"}, ckpt, model)[0]
        {'ln.gamma': 'ln.weight'}
    """
    taken = set(names.values())
    proposed: dict[str, str] = {}
    for orig, name in names.items():
        if name in model:
            continue
        module, _, leaf = name.rpartition(".")
        synonym = LEAF_SYNONYMS.get(leaf)
        if synonym is None:
            continue
        target = f"{module}.{synonym}" if module else synonym
        info = model.get(target)
        if info is None or target in taken or info.shape != checkpoint.tensors[orig].shape:
            continue
        proposed[orig] = target
    counts = Counter(proposed.values())
    proposed = {o: t for o, t in proposed.items() if counts[t] == 1}
    if not proposed:
        return dict(names), ()
    used = Counter(names[o].rpartition(".")[2] for o in proposed)
    steps = tuple(
        AppliedStep(
            Transform(
                TransformKind.LEAF_SYNONYM,
                pattern=leaf,
                replacement=LEAF_SYNONYMS[leaf],
                origin=AUTO,
            ),
            count,
        )
        for leaf, count in sorted(used.items())
    )
    return {o: proposed.get(o, n) for o, n in names.items()}, steps
