"""Dequantized weights: a quantized checkpoint weight turned into float values, as its library does.

``app.matching.dequantization`` decides from the index which quantized weights the
``dequantize`` adapter loads; here their values are computed as they are streamed, with the
same arithmetic, in the same order, as the library that wrote them, so the result is bit for
bit the library's own (tests/merge/test_dequantize.py runs the libraries on the same input):

- ``bnb_int8``: bitsandbytes' ``int8_vectorwise_dequant`` (its PyTorch kernel), which is what
  transformers' ``dequantize_bnb_weight`` calls: ``weight * SCB.view(-1, 1) * (1 / 127)``.
- ``bnb_4bit``: bitsandbytes' ``dequantize_4bit`` (NF4 and FP4, with or without nested
  absmax), what ``dequantize_bnb_weight`` calls for ``Params4bit``.
- ``fp8``: transformers' ``Fp8Dequantize`` (``integrations/finegrained_fp8.py``), how
  transformers loads a DeepSeek-V3 / ``FineGrainedFP8Config`` checkpoint on a machine without
  FP8 support: each block of the float8 weight times its ``weight_scale_inv``, in float32.

The result is float32; the merge casts it to the model's dtype, as both libraries do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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


def dequantize_bnb_4bit(a: Adaptation, read: Reader) -> torch.Tensor:
    """bitsandbytes 4-bit (NF4/FP4): ``checkpoint_keys`` are the packed weight then
    ``weight.absmax``, ``weight.quant_map``, ``weight.quant_state.bitsandbytes__<type>`` and,
    with double quantization, ``weight.nested_absmax`` and ``weight.nested_quant_map``.

    The arithmetic of bitsandbytes' ``dequantize_4bit`` (its PyTorch kernel,
    ``_dequantize_4bit_compute``, and ``dequantize_blockwise`` for the nested absmax): the
    high nibble of each byte first, each code's value times its block's absmax in float32,
    then the quant_state's dtype.

    Raises:
        UnmergeableTensorError: The quant_state is not the JSON bitsandbytes packs, or its
            shape is not the model's.
    """
    import torch

    parts = {_part_name(key): key for key in a.checkpoint_keys[1:]}
    state = _quant_state(read(parts["quant_state"]), parts["quant_state"], a.shape)
    absmax = read(parts["absmax"])
    if "nested_absmax" in parts:
        nested = read(parts["nested_quant_map"])[absmax.reshape(-1).to(torch.int64)]
        absmax = _blockwise(nested, read(parts["nested_absmax"]), state["nested_blocksize"])
        absmax = absmax + torch.tensor(float(state["nested_offset"]))
    packed = read(a.checkpoint_keys[0]).reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(-1).to(torch.int64)
    numel = a.shape[0] * a.shape[1]
    values = read(parts["quant_map"])[codes[:numel]]
    out = _blockwise(values, absmax.float(), state["blocksize"])
    return out.to(getattr(torch, state["dtype"])).reshape(a.shape)


def _part_name(key: str) -> str:
    """``absmax`` for ``fc.weight.absmax``; ``quant_state`` for its packed JSON."""
    tail = key.rpartition(".weight.")[2]
    return "quant_state" if tail.startswith("quant_state.") else tail


def _quant_state(packed: torch.Tensor, key: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """bitsandbytes' ``unpack_tensor_to_dict``: the bytes are UTF-8 JSON."""
    import torch

    try:
        state = json.loads(bytes(packed.reshape(-1).to(torch.uint8).tolist()).decode())
        ok = (
            state["quant_type"] in ("nf4", "fp4")
            and state["dtype"] in ("float16", "bfloat16", "float32")
            and isinstance(state["blocksize"], int)
            and state["blocksize"] > 0
            and tuple(state["shape"]) == shape
            and ("nested_offset" not in state or int(state["nested_blocksize"]) > 0)
        )
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UnmergeableTensorError(
            f"{key!r} is not the quant_state bitsandbytes packs for a 4-bit weight of shape "
            f"{list(shape)} (JSON with quant_type nf4 or fp4, blocksize, dtype, shape).",
            key=key,
        )
    return dict(state)


def _blockwise(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Each block of ``blocksize`` values times its absmax, a last partial block too."""
    import torch

    n = values.numel()
    full = n - n % blocksize
    head = values[:full].reshape(-1, blocksize) * absmax[: full // blocksize].view(-1, 1)
    if full == n:
        return head.reshape(n)
    return torch.cat([head.reshape(full), values[full:] * absmax[full // blocksize]])


OPERATIONS: dict[str, Callable[[Adaptation, Reader], torch.Tensor]] = {
    "bnb_int8": dequantize_bnb_int8,
    "bnb_4bit": dequantize_bnb_4bit,
    "fp8": dequantize_fp8,
}
"""Adaptation operation (the quantization scheme) -> its dequantization."""
