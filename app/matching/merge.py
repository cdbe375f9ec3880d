"""Merge matched checkpoint tensors into an architecture's initial state_dict and write it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
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


def write_state_dict(
    state: Mapping[str, torch.Tensor],
    path: Path,
    *,
    format: MergeFormat,
    metadata: Mapping[str, str],
) -> int:
    """Write a state_dict atomically as safetensors or pt and return its size.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so ``path`` is either absent or complete; the temporary file is removed
    on any error.

    Args:
        state: The tensors to write (CPU). Tied or non-contiguous tensors are fine: for
            safetensors they are written as independent copies, so every key is present.
        path: The destination file.
        format: ``safetensors`` or ``pt``.
        metadata: String pairs for the safetensors header; pt files cannot hold them, so
            they are ignored there.

    Returns:
        The written file's size in bytes.

    Raises:
        ValueError: The format is unknown.
    """
    if format not in ("safetensors", "pt"):
        raise ValueError(f"format must be 'safetensors' or 'pt', not {format!r}")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if format == "safetensors":
            _save_safetensors(state, tmp, metadata=metadata)
        else:
            import torch

            torch.save(dict(state), tmp)
        tmp.replace(path)  # os.replace: atomic within one directory
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _save_safetensors(
    state: Mapping[str, torch.Tensor], path: Path, *, metadata: Mapping[str, str]
) -> None:
    from safetensors.torch import save_file

    save_file(_unshare(state), path, metadata=dict(metadata))


def _unshare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy every tensor that shares storage with an earlier key or is not contiguous.

    ``save_file`` refuses shared storage (tied weights, views) and non-contiguous tensors;
    independent copies keep every key, so the file loads with ``strict=True``.
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        shared = ptr != 0 and ptr in seen
        seen.add(ptr)
        copy = shared or not tensor.is_contiguous()
        out[key] = tensor.contiguous().clone() if copy else tensor
    return out
