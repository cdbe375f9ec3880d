"""Reasons for a key present on both sides with another shape (see ``app.matching.reasons``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from app.enums import Reason
from app.matching.compare import ShapeMismatch
from app.tensors import TensorIndex, TensorKind

HEAD_NAMES = frozenset(
    {
        "fc",
        "head",
        "heads",
        "classifier",
        "cls_score",
        "bbox_pred",
        "cls_logits",
        "bbox_regression",
        "logits",
        "lm_head",
        "last_linear",
        "predictions",
        "score",
        "mask_fcn_logits",
    }
)
"""Module names of output layers."""

POSITION_NAMES = frozenset(
    {
        "pos_embed",
        "pos_embedding",
        "position_embedding",
        "position_embeddings",
        "positional_embedding",
        "absolute_pos_embed",
        "wpe",
        "embed_positions",
        "relative_position_bias_table",
    }
)
"""Names (of a tensor or its module) of position embeddings and relative-position tables."""

RELATIVE_NAMES = frozenset({"relative_position_bias_table"})
"""Relative-position tables: one per attention block, sized by the window (Swin, BEiT)."""

VISION_HINTS = ("vision", "visual", "image", "patch", "pixel")
"""Words in a key that place a 2-D position table in an image tower (CLIP's vision model)."""

PositionKind = Literal["image", "relative", "text"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one key does not load as it is."""

    reason: Reason
    detail: str


def find_stem(model: TensorIndex) -> str | None:
    """The model's stem: its first convolution kernel (a ``weight`` of 3 or more dims).

    Only a ``weight`` counts: a ViT's first 3-D parameters are its ``cls_token`` and
    ``pos_embed``, which would hide the patch embedding's input channels.
    """
    return next(
        (
            i.key
            for i in model
            if i.kind is TensorKind.PARAMETER and len(i.shape) >= 3 and _leaf(i.key) == "weight"
        ),
        None,
    )


def position_kind(key: str, shape: tuple[int, ...]) -> PositionKind:
    """Which kind of position table ``key`` is, for the advice that fits it.

    ``relative``: a relative-position bias table (its size follows the attention window).
    ``text``: a 2-D table of token positions (BERT's ``position_embeddings``, GPT-2's ``wpe``)
    outside an image tower: its size is the maximum sequence length.
    ``image``: otherwise (a ViT's ``pos_embed``, one entry per patch).
    """
    parts = key.split(".")
    if set(parts) & RELATIVE_NAMES:
        return "relative"
    if len(shape) == 2 and not any(h in part.lower() for part in parts for h in VISION_HINTS):
        return "text"
    return "image"


def _differing_dims(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _is_head(key: str, last_module: str | None) -> bool:
    module = key.rsplit(".", 1)[0] if "." in key else ""
    return module == last_module or any(part in HEAD_NAMES for part in module.split("."))


def explain_shape(
    m: ShapeMismatch, *, stem: str | None, last_module: str | None, kwargs: Mapping[str, object]
) -> Explanation:
    """The reason and detail of one shape mismatch (see the module docstring of ``reasons``)."""
    ckpt, model = m.checkpoint_shape, m.model_shape
    shapes = f"checkpoint {list(ckpt)}, model {list(model)}"
    dims = _differing_dims(ckpt, model) if len(ckpt) == len(model) else None
    if m.transposed_sibling is not None:
        return Explanation(
            Reason.TRANSPOSED,
            f"Square ({shapes}), so the shapes agree, but {m.transposed_sibling!r} in the same "
            "block is stored transposed (GPT-2's Conv1D against Linear), so this weight is "
            "too: transpose it before loading.",
        )
    if len(ckpt) == 2 and ckpt == model[::-1]:
        return Explanation(
            Reason.TRANSPOSED,
            f"The checkpoint stores the transpose ({shapes}), as GPT-2's Conv1D does for a "
            "Linear: transpose it before loading.",
        )
    if dims is not None and len(dims) == 1:
        if set(m.key.split(".")) & POSITION_NAMES:
            return Explanation(
                Reason.POSITION_EMBEDDING_RESIZED,
                _position_detail(m, dims[0], kwargs),
            )
        if dims == [1] and m.key == stem:
            return Explanation(
                Reason.INPUT_CHANNELS,
                f"The stem takes {model[1]} input channels, the checkpoint {ckpt[1]}: adapt the "
                "weight with timm's adapt_input_conv (timm.models.adapt_input_conv), or train it.",
            )
        if dims == [0] and _is_head(m.key, last_module):
            cause = head_cause(ckpt[0], model[0], kwargs)
            return Explanation(
                Reason.HEAD_RESIZED, f"An output layer re-initialised because {cause}: train it."
            )
    if _numel(ckpt) == _numel(model):
        return Explanation(
            Reason.RESHAPED,
            f"Same number of elements, other shape ({shapes}): reshape it only if the layout "
            "is known.",
        )
    return Explanation(Reason.UNEXPLAINED, f"The shapes differ ({shapes}).")


def _position_detail(m: ShapeMismatch, dim: int, kwargs: Mapping[str, object]) -> str:
    ckpt, model = m.checkpoint_shape[dim], m.model_shape[dim]
    shapes = f"checkpoint {list(m.checkpoint_shape)}, model {list(m.model_shape)}"
    kind = position_kind(m.key, m.model_shape)
    if kind == "relative":
        return (
            f"The relative-position table has {ckpt} rows in the checkpoint, {model} in the "
            f"model ({shapes}): the attention window changed. Interpolate it (timm's "
            "resize_rel_pos_bias_table) or train it."
        )
    if kind == "text":
        cause = sequence_cause(ckpt, model, kwargs)
        return (
            f"The position table has {ckpt} rows in the checkpoint, {model} in the model "
            f"({shapes}): {cause}. {resize_text_positions(ckpt, model)}"
        )
    return (
        f"The token count differs ({ckpt} -> {model}; {shapes}): the image or patch size "
        "changed. Interpolate it (timm's resample_abs_pos_embed) or train it."
    )


def sequence_cause(checkpoint_rows: int, model_rows: int, kwargs: Mapping[str, object]) -> str:
    """``max_position_embeddings changed from 514 to 1026`` when the kwargs say so."""
    config = kwargs.get("config")
    fields = {**(config if isinstance(config, Mapping) else {}), **kwargs}
    for name in ("max_position_embeddings", "n_positions"):
        if fields.get(name) == model_rows:
            return f"{name} changed from {checkpoint_rows} to {model_rows}"
    return "the maximum sequence length (max_position_embeddings) changed"


def resize_text_positions(checkpoint_rows: int, model_rows: int) -> str:
    """What to do with a text position table of another length (no interpolation: tokens)."""
    if model_rows > checkpoint_rows:
        return (
            f"Extend it: copy the checkpoint's {checkpoint_rows} rows and train the new ones "
            "(or repeat the rows, as Longformer extended RoBERTa's), or keep the checkpoint's "
            "length."
        )
    return (
        f"Truncate it to its first {model_rows} rows (sequences get shorter), or keep the "
        "checkpoint's length."
    )


def head_cause(checkpoint_size: int, model_size: int, kwargs: Mapping[str, object]) -> str:
    """``num_classes changed from 1000 to 10`` when the kwargs say so, else the output size."""
    if kwargs.get("num_classes") == model_size:
        return f"num_classes changed from {checkpoint_size} to {model_size}"
    return f"its output size changed from {checkpoint_size} to {model_size}"


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
