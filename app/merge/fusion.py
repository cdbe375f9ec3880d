"""A fused model tensor built from per-expert checkpoint tensors with transformers' own operations.

transformers 5 loads a Mixtral or Qwen2-MoE file saved by 4.x with ``WeightConverter``
operations: ``MergeModulelist(dim=0)`` stacks each part's experts, then ``Concatenate(dim=1)``
joins the parts (``w1`` then ``w3`` into ``gate_up_proj``). Stacking along dim 0 and then
concatenating along a later dim is the same as doing both expert by expert, so the fused
tensor is built one expert at a time by calling those very classes on that expert's tensors:
memory stays at one fused tensor plus one expert's parts, and the values cannot drift from
the library's (``app.matching.converters.buildable`` admits only that chain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.matching.adapters import Adaptation

if TYPE_CHECKING:
    import torch

Reader = Callable[[str], "torch.Tensor"]


def fuse_experts(a: Adaptation, read: Reader) -> torch.Tensor:
    """The fused tensor of one ``library_fusion`` adaptation, built expert by expert.

    Args:
        a: The adaptation (``checkpoint_keys``: ``a.start`` parts of equal length, each in
            expert order; ``a.dim``: the Concatenate dim, 0 for a stack alone).
        read: Checkpoint key -> its tensor.

    Returns:
        A tensor of ``a.shape``, in the dtype torch's stack and cat promote the parts to (as
        the library's would).

    Example:
        >>> fuse_experts(gate_up, source.read).shape  # doctest: +SKIP
        torch.Size([8, 28672, 4096])
    """
    import torch

    parts = max(a.start, 1)
    experts = len(a.checkpoint_keys) // parts
    runs = [a.checkpoint_keys[p * experts : (p + 1) * experts] for p in range(parts)]
    names = [f"part{p}" for p in range(parts)]
    operations = _operations(a.dim)
    out: torch.Tensor | None = None
    for expert in range(experts):
        collected: dict[str, Any] = {
            name: [read(run[expert])] for name, run in zip(names, runs, strict=True)
        }
        for operation in operations:
            collected = operation.convert(
                collected, source_patterns=names, target_patterns=["fused"]
            )
        (piece,) = collected.values()
        if out is None:
            out = torch.empty(a.shape, dtype=piece.dtype)
        elif piece.dtype != out.dtype:  # widen exactly, as one stack of them all would
            out = out.to(torch.promote_types(out.dtype, piece.dtype))
        out.narrow(0, expert, 1).copy_(piece)
    if out is None:
        raise ValueError(f"no checkpoint tensors to fuse into {a.key!r}")
    return out


def _operations(concat_dim: int) -> list[Any]:
    from transformers.core_model_loading import Concatenate, MergeModulelist

    operations: list[Any] = [MergeModulelist(dim=0)]
    if concat_dim:
        operations.append(Concatenate(dim=concat_dim))
    return operations
