"""Reasons for a key present on both sides with another shape (see ``app.matching.reasons``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.matching.compare import ShapeMismatch
from app.schemas import Reason

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
        "absolute_pos_embed",
        "relative_position_bias_table",
    }
)
"""Names (of a tensor or its module) of position embeddings and relative-position tables."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one key does not load as it is."""

    reason: Reason
    detail: str


def _differing_dims(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def _is_head(key: str, last_module: str | None) -> bool:
    module = key.rsplit(".", 1)[0] if "." in key else ""
    return module == last_module or any(part in HEAD_NAMES for part in module.split("."))


def explain_shape(
    m: ShapeMismatch, *, stem: str | None, last_module: str | None, kwargs: Mapping[str, object]
) -> Explanation:
    ckpt, model = m.checkpoint_shape, m.model_shape
    shapes = f"checkpoint {list(ckpt)}, model {list(model)}"
    dims = _differing_dims(ckpt, model) if len(ckpt) == len(model) else None
    if len(ckpt) == 2 and ckpt == model[::-1]:
        return Explanation(
            Reason.TRANSPOSED,
            f"The checkpoint stores the transpose ({shapes}), as GPT-2's Conv1D does for a "
            "Linear: transpose it before loading.",
        )
    if dims is not None and len(dims) == 1:
        names = set(m.key.split("."))
        if names & POSITION_NAMES:
            return Explanation(
                Reason.POSITION_EMBEDDING_RESIZED,
                f"The token count differs ({ckpt[dims[0]]} -> {model[dims[0]]}; {shapes}): "
                "the image or patch size changed. Interpolate it (timm's "
                "resample_abs_pos_embed) or train it.",
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
