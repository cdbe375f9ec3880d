"""Compare a checkpoint index with a model index key by key: matched, missing, unexpected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from app.tensors import TensorIndex, TensorInfo, TensorKind


class ShapeMismatch(NamedTuple):
    """A key present on both sides whose shapes (or layouts) differ; it is not loaded.

    ``transposed_sibling`` is set for a square weight whose shape agrees but whose block holds
    a weight stored transposed (``transformer.h.0.attn.c_proj.weight`` next to a transposed
    ``c_attn``): the shapes cannot tell, the siblings do, and loading it would be silently wrong.
    """

    key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    transposed_sibling: str | None = None


class DtypeDifference(NamedTuple):
    """A matched key whose dtypes differ; it still loads, with a cast."""

    key: str
    checkpoint_dtype: str
    model_dtype: str


@dataclass(frozen=True, slots=True)
class MatchResult:
    """How a checkpoint index fits a model index.

    Attributes:
        matched: Model keys whose checkpoint tensor has the same key and shape, model order.
        missing: Model keys absent from the checkpoint, model order.
        unexpected: Checkpoint keys absent from the model, checkpoint order.
        shape_mismatched: Keys on both sides with different shapes, model order.
        dtype_differs: Matched keys whose dtypes differ, model order.
        loaded_parameter_numel: Elements of the model's parameters that are matched.
        model_parameter_numel: Elements of all the model's parameters.
    """

    matched: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatched: tuple[ShapeMismatch, ...]
    dtype_differs: tuple[DtypeDifference, ...]
    loaded_parameter_numel: int
    model_parameter_numel: int

    @property
    def loaded_parameter_fraction(self) -> float:
        """Matched parameter elements over model parameter elements (0.0 without parameters)."""
        if self.model_parameter_numel == 0:
            return 0.0
        return self.loaded_parameter_numel / self.model_parameter_numel


def compare(checkpoint: TensorIndex, model: TensorIndex) -> MatchResult:
    """Compare two indexes by exact key, then by shape and dtype.

    Keys must already be aligned (renamed to the model's names) by the caller; this function
    only compares. A square 2-D weight counts as mismatched, though its shape agrees, when a
    weight of its block is stored transposed (see ``ShapeMismatch``).

    Args:
        checkpoint: The checkpoint's tensors (kind ``unknown``).
        model: The architecture's tensors (kind ``parameter`` or ``buffer``).

    Returns:
        The match result; lists keep model order, ``unexpected`` keeps checkpoint order.

    Example:
        >>> from app.tensors import TensorInfo, TensorKind
        >>> model = TensorIndex.from_infos(
        ...     [
        ...         TensorInfo("fc.weight", (10, 4), "float32", TensorKind.PARAMETER),
        ...         TensorInfo("fc.bias", (10,), "float32", TensorKind.PARAMETER),
        ...     ]
        ... )
        >>> ckpt = TensorIndex.from_infos(
        ...     [TensorInfo("fc.weight", (10, 4), "float16"), TensorInfo("head.w", (3,), "float32")]
        ... )
        >>> result = compare(ckpt, model)
        >>> result.matched, result.missing, result.unexpected
        (('fc.weight',), ('fc.bias',), ('head.w',))
        >>> round(result.loaded_parameter_fraction, 3)
        0.8
    """
    matched: list[str] = []
    missing: list[str] = []
    shape_mismatched: list[ShapeMismatch] = []
    dtype_differs: list[DtypeDifference] = []
    loaded_numel = 0
    transposed = _transposed_blocks(checkpoint, model)
    for info in model:
        found = checkpoint.get(info.key)
        sibling = transposed.get(_block(info.key)) if _is_square_weight(info) else None
        if found is None:
            missing.append(info.key)
        elif found.shape != info.shape or sibling is not None:
            shape_mismatched.append(ShapeMismatch(info.key, found.shape, info.shape, sibling))
        else:
            matched.append(info.key)
            if found.dtype != info.dtype:
                dtype_differs.append(DtypeDifference(info.key, found.dtype, info.dtype))
            if info.kind is TensorKind.PARAMETER:
                loaded_numel += info.numel
    return MatchResult(
        matched=tuple(matched),
        missing=tuple(missing),
        unexpected=tuple(key for key in checkpoint.tensors if key not in model),
        shape_mismatched=tuple(shape_mismatched),
        dtype_differs=tuple(dtype_differs),
        loaded_parameter_numel=loaded_numel,
        model_parameter_numel=model.parameter_numel,
    )


def strict_loadable(checkpoint: TensorIndex, model: TensorIndex) -> bool:
    """Whether ``model.load_state_dict(state_dict, strict=True)`` accepts the state_dict as stored.

    The README defines ``summary.strict_loadable`` on the file as it is, before any alignment:
    a ``module.``-prefixed file is not strict-loadable even when stripping the prefix makes
    every key match. Dtype casts are allowed (``load_state_dict`` copies with a cast).

    Example:
        >>> from app.tensors import TensorInfo
        >>> model = TensorIndex.from_infos([TensorInfo("fc.weight", (2, 2), "float32")])
        >>> stored = TensorIndex.from_infos([TensorInfo("module.fc.weight", (2, 2), "float32")])
        >>> strict_loadable(stored, model), strict_loadable(model, model)
        (False, True)
    """
    if len(checkpoint) != len(model):
        return False
    for info in model:
        found = checkpoint.get(info.key)
        if found is None or found.shape != info.shape:
            return False
    return True


def _block(key: str) -> str:
    """The repeated block holding a tensor's module (``h.0`` for ``h.0.attn.c_proj.weight``).

    The innermost ancestor above the tensor's module whose name is a number; without one, the
    module's parent. The tensor's own module is never the block, or a ``Sequential`` index
    (``mlp.0.weight``) would make every layer a block of its own.
    """
    parts = key.split(".")[:-2]  # the ancestors strictly above the tensor's module
    for end in range(len(parts), 0, -1):
        if parts[end - 1].isdigit():
            return ".".join(parts[:end])
    return ".".join(parts)


def _is_square_weight(info: TensorInfo) -> bool:
    shape = info.shape
    return info.kind is TensorKind.PARAMETER and len(shape) == 2 and shape[0] == shape[1] > 1


def _transposed_blocks(checkpoint: TensorIndex, model: TensorIndex) -> dict[str, str]:
    """Block -> the first model key in it whose checkpoint tensor is its (non-square) transpose.

    GPT-2's ``Conv1D`` stores ``(in, out)`` where ``nn.Linear`` stores ``(out, in)``; a block's
    non-square weights reveal that, and its square ones (``attn.c_proj``) share the layout.
    """
    blocks: dict[str, str] = {}
    for info in model:
        found = checkpoint.get(info.key)
        shape = info.shape
        transposed = found is not None and len(shape) == 2 and found.shape == shape[::-1]
        if transposed and shape[0] != shape[1]:
            blocks.setdefault(_block(info.key), info.key)
    return blocks
