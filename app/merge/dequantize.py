"""Dequantized weights: a quantized checkpoint weight turned into float values, as its library does.

``app.matching.dequantization`` decides from the index which quantized weights the
``dequantize`` adapter loads; here their values are computed as they are streamed, with the
same arithmetic, in the same order, as the library that wrote them, so the result is bit for
bit the library's own (tests/merge/test_dequantize.py runs the libraries on the same input):

- ``bnb_int8``: bitsandbytes' ``int8_vectorwise_dequant`` (its PyTorch kernel), which is what
  transformers' ``dequantize_bnb_weight`` calls: ``weight * SCB.view(-1, 1) * (1 / 127)``.
- ``fp8``: transformers' ``Fp8Dequantize`` (``integrations/finegrained_fp8.py``), how
  transformers loads a DeepSeek-V3 / ``FineGrainedFP8Config`` checkpoint on a machine without
  FP8 support: each block of the float8 weight times its ``weight_scale_inv``, in float32.

The result is float32; the merge casts it to the model's dtype, as both libraries do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from app.errors import UnmergeableTensorError

if TYPE_CHECKING:
    import torch

    from app.matching.adapters import Adaptation

Reader = Callable[[str], "torch.Tensor"]

INT8_RECIPROCAL = 7.874015718698502e-3
"""1 / 127 as bitsandbytes writes it (``bitsandbytes/_ops.py``): multiplying by it, not
dividing by 127, is what makes the values bit-identical to the library's."""

ROW_FORMAT = 0
"""bitsandbytes' ``LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING["row"]``: the only layout it saves today."""


def dequantize_bnb_int8(a: Adaptation, read: Reader) -> torch.Tensor:
    """bitsandbytes LLM.int8: ``checkpoint_keys`` are (weight, SCB[, weight_format]).

    Raises:
        UnmergeableTensorError: ``weight_format`` names a tiled layout (col32, col_turing,
            col_ampere) that old bitsandbytes versions saved: its bytes are not rows.
    """
    weight, scb = read(a.checkpoint_keys[0]), read(a.checkpoint_keys[1])
    for key in a.checkpoint_keys[2:]:
        fmt = read(key)
        if fmt.numel() != 1 or int(fmt.reshape(-1)[0]) != ROW_FORMAT:
            raise UnmergeableTensorError(
                f"{key!r} says the int8 weight is stored in a tiled bitsandbytes format "
                f"({fmt.reshape(-1).tolist()[:4]}), not row-major: load it with the "
                "bitsandbytes version that wrote it and save it again.",
                key=key,
            )
    out: torch.Tensor = weight * scb.view(-1, 1) * INT8_RECIPROCAL
    return out


def dequantize_fp8(a: Adaptation, read: Reader) -> torch.Tensor:
    """FP8 with block (or per-tensor) scales: ``checkpoint_keys`` start (weight,
    weight_scale_inv); the scale grid sets the block size, as transformers derives it."""
    import torch

    q = read(a.checkpoint_keys[0]).to(torch.float32)
    scales = read(a.checkpoint_keys[1])
    rows, cols = q.shape[-2:]
    grid = (scales.shape[-2], scales.shape[-1]) if scales.dim() >= 2 else (1, 1)
    if rows % grid[0] or cols % grid[1]:
        raise UnmergeableTensorError(
            f"The scale grid {list(grid)} of {a.checkpoint_keys[1]!r} does not divide the "
            f"weight [{rows}, {cols}] into equal blocks.",
            key=a.checkpoint_keys[1],
        )
    s = scales.to(torch.float32)
    blocked = q.reshape(-1, grid[0], rows // grid[0], grid[1], cols // grid[1])
    out: torch.Tensor = blocked * s.reshape(-1, grid[0], grid[1]).unsqueeze(-1).unsqueeze(2)
    return out.reshape(q.shape)


OPERATIONS: dict[str, Callable[[Adaptation, Reader], torch.Tensor]] = {
    "bnb_int8": dequantize_bnb_int8,
    "fp8": dequantize_fp8,
}
"""Adaptation operation (the quantization scheme) -> its dequantization."""
