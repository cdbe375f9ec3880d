"""The in-memory definition of a merge: the initial state_dict with the matched tensors put in.

Workers write merges with ``app.merge.streaming.stream_merge``, which never holds the
model in memory; its tests check it bit for bit against this definition. Keys an adapter
loads are computed here by the very function the streaming merge calls
(``app.merge.adapters.adapt_tensor``), from the same plan (``Analysis.adaptations``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from app.merge.adapters import adapt_tensor

if TYPE_CHECKING:
    import torch

    from app.matching.adapters import Adaptation

DtypePolicy = Literal["model", "checkpoint"]
MergeFormat = Literal["safetensors", "pt"]


def merge_state_dict(
    initial: Mapping[str, torch.Tensor],
    loaded: Mapping[str, torch.Tensor],
    *,
    dtype_policy: DtypePolicy = "model",
    adaptations: Mapping[str, Adaptation] | None = None,
    checkpoint: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Substitute the loaded tensors into the architecture's initial state_dict.

    Args:
        initial: ``model.state_dict()`` right after construction; sets keys, order and shapes.
        loaded: The matched checkpoint tensors, under the model's keys.
        dtype_policy: ``model`` casts each loaded tensor to the initial tensor's dtype;
            ``checkpoint`` keeps the checkpoint's dtype (an adapted tensor, the dtype its
            adapter returns; a dequantized one, the model's).
        adaptations: Model key -> how an adapter computes it (``Analysis.adaptations``, the
            plan ``stream_merge`` takes).
        checkpoint: The checkpoint's tensors under their stored keys, which the adaptations
            read.

    Returns:
        A new dict with the initial keys in order; loaded values are the checkpoint tensors
        themselves (bit-identical) when no cast is needed.

    Raises:
        ValueError: A loaded key is not in ``initial``, has another shape, is also adapted,
            adaptations come without ``checkpoint``, or the policy is unknown; these are
            programming errors, since only matched keys may be loaded.
        UnmergeableTensorError: An adapter's result does not have the model's shape.

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
    if adaptations:
        if checkpoint is None:
            raise ValueError("adaptations read the checkpoint's tensors: pass checkpoint")
        both = sorted(adaptations.keys() & loaded.keys())
        if both:
            raise ValueError(f"keys both loaded and adapted: {both[:5]}")
        stored = checkpoint
        loaded = {
            **loaded,
            **{key: adapt_tensor(a, stored.__getitem__) for key, a in adaptations.items()},
        }
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
        elif dtype_policy == "model" or _dequantized(adaptations, key):
            # A dequantized weight has no float dtype in the file: it takes the model's.
            merged[key] = loaded[key].to(dtype=tensor.dtype)
        else:
            merged[key] = loaded[key]
    return merged


def _dequantized(adaptations: Mapping[str, Adaptation] | None, key: str) -> bool:
    found = (adaptations or {}).get(key)
    return found is not None and found.adapter == "dequantize"
