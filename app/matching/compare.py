"""Compare a checkpoint index with a model index key by key: matched, missing, unexpected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from app.tensors import TensorIndex, TensorKind


class ShapeMismatch(NamedTuple):
    """A key present on both sides whose shapes differ; it is not loaded."""

    key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]


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
    def strict_loadable(self) -> bool:
        """Whether ``load_state_dict(strict=True)`` accepts the checkpoint (casts allowed)."""
        return not (self.missing or self.unexpected or self.shape_mismatched)

    @property
    def loaded_parameter_fraction(self) -> float:
        """Matched parameter elements over model parameter elements (0.0 without parameters)."""
        if self.model_parameter_numel == 0:
            return 0.0
        return self.loaded_parameter_numel / self.model_parameter_numel


def compare(checkpoint: TensorIndex, model: TensorIndex) -> MatchResult:
    """Compare two indexes by exact key, then by shape and dtype.

    Keys must already be aligned (renamed to the model's names) by the caller; this function
    only compares.

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
    for info in model:
        found = checkpoint.get(info.key)
        if found is None:
            missing.append(info.key)
        elif found.shape != info.shape:
            shape_mismatched.append(ShapeMismatch(info.key, found.shape, info.shape))
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
