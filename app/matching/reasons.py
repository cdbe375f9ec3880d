"""A reason, from a documented list, for every key that does not load as it is.

The reasons (``app.schemas.Reason``):

- ``head_resized``: an output layer (a module named like ``fc``, ``head``, ``classifier``,
  ``cls_score``, ``bbox_pred``, ``lm_head``..., or the model's last layer) whose output size
  differs, usually because num_classes changed; re-initialised, train it.
- ``input_channels``: the stem (the model's first convolution kernel, not a ViT's
  ``cls_token``) differs only in input channels; timm's ``adapt_input_conv`` converts it.
- ``position_embedding_resized``: a position table whose length differs: an image one (patch
  count: timm's ``resample_abs_pos_embed``), a relative one (window: timm's
  ``resize_rel_pos_bias_table``) or a text one (``max_position_embeddings``: extend or
  truncate); see ``app.matching.shapes``.
- ``transposed``: the checkpoint tensor is the transpose of the model's (GPT-2 ``Conv1D``
  against ``nn.Linear``), or a square weight in the same block as such a tensor; transpose it
  before loading. Not loaded by a merge.
- ``reshaped``: same number of elements, another shape; or an attention projection fused on
  one side (``qkv``, ``in_proj_weight``) and split on the other (``query``/``key``/``value``),
  on both sides (``app.matching.attention``). Not loaded by a merge.
- ``dtype_cast``: the dtypes differ; it loads with a cast, and the detail says whether the
  cast is lossless.
- ``ignorable``: a buffer that carries no learned state (``num_batches_tracked``,
  ``position_ids``, rotary ``inv_freq``, causal masks...), or another name of a loaded
  parameter: a tie of the model found by parameter identity (``app.matching.ties``), or in
  the checkpoint a tied ``lm_head``-style alias the model does not have.
- ``new_module``: a whole module exists on one side only: in the model (a detection head on a
  classification backbone: train it) or, for unexpected keys, in the checkpoint (a classifier
  the model does not have: it is not used). A head the checkpoint replaced by another
  structure (MoCo's ``fc`` projector) is new too (``app.matching.structure``).
- ``depth_changed``: a repeated block (``layer3.6``) that one side's stack lacks while its
  siblings load: the architectures differ in depth, which training does not repair.
- ``renamed``: a module on one side whose shapes are those of an unused module of the other
  side under another name (DistilBERT's ``transformer`` for BERT's ``encoder``): map it.
- ``quantized``: the file holds the weight quantized (bitsandbytes int8/4-bit, FP8 with block
  scales, GPTQ/AWQ ``qweight``, compressed-tensors), or the key is one of its scales or zero
  points; not loaded (``app.matching.layouts``, ``app.matching.layout_reasons``).
- ``adapter``: the file is a PEFT adapter (LoRA ``lora_A``/``lora_B``...): its tensors modify
  base weights it does not hold, and the model's keys come from the base model.
- ``partitioned``: an empty placeholder (DeepSpeed ZeRO-3, FSDP) where the model has weights.
- ``unexplained``: none of the above.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.enums import Reason
from app.matching.attention import explain_fused_attention
from app.matching.compare import MatchResult
from app.matching.dtypes import describe_cast
from app.matching.shapes import Explanation, explain_shape, find_stem
from app.matching.ties import loaded_tie
from app.tensors import TensorIndex, TensorKind

if TYPE_CHECKING:
    from app.matching.structure import Structure

IGNORABLE_NAMES = frozenset(
    {
        "num_batches_tracked",
        "position_ids",
        "token_type_ids",
        "inv_freq",
        "masked_bias",
        "causal_mask",
        "attn_mask",
        "relative_position_index",
        "n_averaged",
    }
)
"""Leaf names of buffers that carry no learned state."""

DERIVED_BUFFER = Explanation(
    Reason.IGNORABLE,
    "A buffer with no learned state, computed from the model's configuration: the model's own "
    "value is kept.",
)

TIED_ALIASES = ("lm_head.weight", "decoder.weight", "output_projection.weight")
EMBEDDING_HINTS = ("embed", "wte", "word_embeddings", "shared")

# Reasons under which a model still works as expected after the change the reason names.
EXPECTED_CHANGES = frozenset(
    {
        Reason.HEAD_RESIZED,
        Reason.NEW_MODULE,
        Reason.POSITION_EMBEDDING_RESIZED,
        Reason.INPUT_CHANNELS,
    }
)


@dataclass(frozen=True, slots=True)
class Explanations:
    """A reason per key, by category.

    Attributes:
        missing: Model key -> explanation.
        unexpected: Aligned checkpoint key (or original key of a leftover) -> explanation.
        shape_mismatched: Model key -> explanation.
        dtype_differs: Model key -> explanation (always ``dtype_cast``).
        new_modules: Model modules that are new (outermost), model order.
        checkpoint_only_modules: Checkpoint modules the model lacks (outermost), under their
            names in the file (``module.fc``), in order.
        structure: Module-level findings (replaced heads, depth, renames) once
            ``app.matching.structure.refine_structure`` has run, else None.
    """

    missing: Mapping[str, Explanation]
    unexpected: Mapping[str, Explanation]
    shape_mismatched: Mapping[str, Explanation]
    dtype_differs: Mapping[str, Explanation]
    new_modules: tuple[str, ...]
    checkpoint_only_modules: tuple[str, ...]
    structure: Structure | None = None

    def all(self) -> list[Explanation]:
        """Every explanation, dtype casts included."""
        groups = (self.missing, self.unexpected, self.shape_mismatched, self.dtype_differs)
        return [e for group in groups for e in group.values()]


def ancestors(key: str) -> list[str]:
    """The modules holding ``key``, outermost first: ``a.b.w`` -> ``["a", "a.b"]``."""
    out: list[str] = []
    pos = key.find(".")
    while pos != -1:
        out.append(key[:pos])
        pos = key.find(".", pos + 1)
    return out


def holders(keys: Iterable[str]) -> set[str]:
    """Every key and every module holding one: what ``within(key, [m])`` asks, as a set, so
    asking it for many modules costs one pass over the keys (a file of 60,000 top-level
    tensors has as many checkpoint-only entries)."""
    return {m for key in keys for m in (*ancestors(key), key)}


def _unused_module(origin: str, used: set[str]) -> str:
    """The outermost module of the file holding ``origin`` and no key that loads, else the key
    itself: after ``strip 'module.encoder_q.'`` the unused module is ``module.encoder_k``, not
    ``module``, whose query encoder loads (names from the file, not after alignment)."""
    return next((m for m in ancestors(origin) if m not in used), origin)


def _module_set(keys: Iterable[str]) -> set[str]:
    return {module for key in keys for module in ancestors(key)}


def _outermost_absent(key: str, present: set[str]) -> str | None:
    return next((m for m in ancestors(key) if m not in present), None)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _is_mask(key: str, shape: tuple[int, ...]) -> bool:
    return _leaf(key) == "bias" and len(shape) == 4 and shape[-1] == shape[-2] > 1


def _tied_to(key: str, shape: tuple[int, ...], loaded: Mapping[str, tuple[int, ...]]) -> str | None:
    if not key.endswith(TIED_ALIASES):
        return None
    return next(
        (k for k, s in loaded.items() if s == shape and any(h in k for h in EMBEDDING_HINTS)),
        None,
    )


def explain(
    result: MatchResult,
    *,
    checkpoint: TensorIndex,
    model: TensorIndex,
    sources: Mapping[str, str],
    leftover: Sequence[str] = (),
    ambiguous: Sequence[str] = (),
    original: TensorIndex | None = None,
    architecture_kwargs: Mapping[str, object] | None = None,
) -> Explanations:
    """Give each missing, unexpected, shape-mismatched and cast key its reason and a detail.

    Args:
        result: ``compare(checkpoint, model)``.
        checkpoint: The aligned checkpoint index (model-side names).
        model: The model index.
        sources: Aligned key -> original checkpoint key.
        leftover: Original checkpoint keys that found no place (unexpected too).
        ambiguous: Original keys match_by_suffix did not guess.
        original: The checkpoint index by original keys (for the leftovers' shapes).
        architecture_kwargs: The architecture's kwargs (to name num_classes in details).

    Returns:
        The explanations, by category.
    """
    kwargs = architecture_kwargs or {}
    ckpt_modules = _module_set(checkpoint.tensors)
    model_modules = _module_set(model.tensors)
    loaded = {k: model.tensors[k].shape for k in result.matched}
    stem = find_stem(model)
    params = [i.key for i in model if i.kind in (TensorKind.PARAMETER, TensorKind.TIED)]
    last_module = params[-1].rsplit(".", 1)[0] if params and "." in params[-1] else None
    fused = explain_fused_attention(  # qkv on one side, query/key/value on the other
        {k: model.tensors[k].shape for k in result.missing},
        {k: checkpoint.tensors[k].shape for k in result.unexpected},
        sources=sources,
    )

    # Top-level tensors (MAE's mask_token, DeiT's dist_token, a model's own cls_token) belong
    # to the root module, which both sides have: one with no same-shaped top-level tensor on
    # the other side to be its renamed twin is a tensor only one side has, not a mystery.
    root_missing = {model.tensors[k].shape for k in result.missing if "." not in k}
    root_unexpected = {checkpoint.tensors[k].shape for k in result.unexpected if "." not in k}

    missing: dict[str, Explanation] = {}
    new_modules: dict[str, None] = {}
    for key in result.missing:
        info = model.tensors[key]
        module = _outermost_absent(key, ckpt_modules)
        tied = loaded_tie(key, model, loaded)  # the model's own ties, by parameter identity
        if info.kind not in (TensorKind.PARAMETER, TensorKind.TIED) and (
            _leaf(key) in IGNORABLE_NAMES or _is_mask(key, info.shape)
        ):
            missing[key] = Explanation(Reason.IGNORABLE, "A buffer with no learned state.")
        elif tied is not None:
            missing[key] = Explanation(
                Reason.IGNORABLE,
                f"Tied to the loaded {tied!r}: the same parameter, so it loads with it.",
            )
        elif key in fused:
            missing[key] = fused[key]
        elif "." not in key and info.shape not in root_unexpected:
            new_modules[key] = None
            missing[key] = Explanation(
                Reason.NEW_MODULE,
                f"The top-level tensor {key!r} is not in the checkpoint: it is new, train it.",
            )
        elif module is not None:
            new_modules[module] = None
            missing[key] = Explanation(
                Reason.NEW_MODULE,
                f"The module {module!r} is not in the checkpoint: it is new, train it.",
            )
        else:
            missing[key] = Explanation(
                Reason.UNEXPLAINED,
                f"No checkpoint tensor is named {key!r} after alignment, though its module "
                "is in the checkpoint.",
            )

    unexpected: dict[str, Explanation] = {}
    only: dict[str, None] = {}
    placed = (*result.matched, *(m.key for m in result.shape_mismatched))
    used = _module_set(sources[k] for k in placed if k in sources)
    for key in result.unexpected:
        shape = checkpoint.tensors[key].shape
        module = _outermost_absent(key, model_modules)
        tied = _tied_to(key, shape, loaded)
        if _leaf(key) in IGNORABLE_NAMES or _is_mask(key, shape):
            unexpected[key] = Explanation(Reason.IGNORABLE, "A buffer with no learned state.")
        elif tied is not None:
            unexpected[key] = Explanation(Reason.IGNORABLE, f"A tied alias of the loaded {tied!r}.")
        elif key in fused:
            unexpected[key] = fused[key]
        elif "." not in key and shape not in root_missing:
            only[_unused_module(sources.get(key, key), used)] = None
            unexpected[key] = Explanation(
                Reason.NEW_MODULE,
                f"The top-level tensor {key!r} is only in the checkpoint; the model has none, "
                "so it is not used.",
            )
        elif module is not None:
            origin = sources.get(key, key)
            only[_unused_module(origin, used)] = None
            unexpected[key] = Explanation(
                Reason.NEW_MODULE,
                f"The module {module!r} is only in the checkpoint; the model has none, so it "
                "is not used.",
            )
        else:
            unexpected[key] = Explanation(
                Reason.UNEXPLAINED,
                f"The model has no tensor {key!r}, though it has the module "
                f"{key.rsplit('.', 1)[0]!r}."
                if "." in key
                else f"The model has no tensor {key!r}.",
            )
    for orig in leftover:
        detail = (
            "match_by_suffix found several model keys with its suffix and shape; not guessed."
            if orig in ambiguous
            else "match_by_suffix gave its name to another checkpoint key."
        )
        unexpected[orig] = Explanation(Reason.UNEXPLAINED, detail)
    for orig in ambiguous:
        aligned = next((a for a, o in sources.items() if o == orig), None)
        if aligned is not None and aligned in unexpected:
            unexpected[aligned] = Explanation(
                Reason.UNEXPLAINED,
                "match_by_suffix found several model keys with its suffix and shape; not guessed.",
            )

    mismatched = {
        m.key: DERIVED_BUFFER  # e.g. Swin's relative_position_index follows the window size
        if model.tensors[m.key].kind is TensorKind.BUFFER and _leaf(m.key) in IGNORABLE_NAMES
        else explain_shape(m, stem=stem, last_module=last_module, kwargs=kwargs)
        for m in result.shape_mismatched
    }
    casts = {
        d.key: Explanation(
            Reason.DTYPE_CAST,
            f"Loads with a cast: {describe_cast(d.checkpoint_dtype, d.model_dtype)}.",
        )
        for d in result.dtype_differs
    }
    return Explanations(
        missing=missing,
        unexpected=unexpected,
        shape_mismatched=mismatched,
        dtype_differs=casts,
        new_modules=tuple(new_modules),
        checkpoint_only_modules=tuple(only),
    )
