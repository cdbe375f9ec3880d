"""The in-memory definition of a merge: the initial state_dict with the matched tensors put in.

Workers write merges with ``app.merge.streaming.stream_merge``, which never holds the
model in memory; its tests check it bit for bit against this definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

DtypePolicy = Literal["model", "checkpoint"]
MergeFormat = Literal["safetensors", "pt"]


def merge_state_dict(
    initial: Mapping[str, torch.Tensor],
    loaded: Mapping[str, torch.Tensor],
    *,
    dtype_policy: DtypePolicy = "model",
) -> dict[str, torch.Tensor]:
    """Substitute the loaded tensors into the architecture's initial state_dict.

    Args:
        initial: ``model.state_dict()`` right after construction; sets keys, order and shapes.
        loaded: The matched checkpoint tensors, under the model's keys.
        dtype_policy: ``model`` casts each loaded tensor to the initial tensor's dtype;
            ``checkpoint`` keeps the checkpoint's dtype.

    Returns:
        A new dict with the initial keys in order; loaded values are the checkpoint tensors
        themselves (bit-identical) when no cast is needed.

    Raises:
        ValueError: A loaded key is not in ``initial``, has another shape, or the policy is
            unknown; these are programming errors, since only matched keys may be loaded.

    Example:
        >>> import torch
        >>> merged = merge_state_dict(
        ...     {"w": torch.zeros(2), "b": torch.zeros(1)},
        ...     {"w": torch.ones(2, dtype=torch.float16)},
        ... )
        >>> merged["w"].dtype, merged["b"].tolist()
        (torch.float32, [0.0])
    """
    if dtype_policy not in ("model", "checkpoint"):
        raise ValueError(f"dtype_policy must be 'model' or 'checkpoint', not {dtype_policy!r}")
    for key, tensor in loaded.items():
        if key not in initial:
            raise ValueError(f"loaded key {key!r} is not in the initial state_dict")
        if tensor.shape != initial[key].shape:
            raise ValueError(
                f"loaded key {key!r} has shape {tuple(tensor.shape)}, "
                f"the initial state_dict has {tuple(initial[key].shape)}"
            )
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in initial.items():
        if key not in loaded:
            merged[key] = tensor
        elif dtype_policy == "model":
            merged[key] = loaded[key].to(dtype=tensor.dtype)
        else:
            merged[key] = loaded[key]
    return merged
