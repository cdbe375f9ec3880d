"""Which quantized weights the ``dequantize`` adapter loads. Pure: dtypes and shapes only.

Dequantizing is only as good as its arithmetic, so the adapter loads only the layouts a test
proves equal to the library's own dequantization on the same file
(tests/merge/test_dequantize.py): bitsandbytes LLM.int8 (``weight`` int8, ``SCB``,
``weight_format``), checked against bitsandbytes' ``int8_vectorwise_dequant``; bitsandbytes
4-bit (NF4, FP4, nested absmax), against its ``dequantize_4bit``; and FP8 with
``weight_scale_inv`` block scales (DeepSeek-V3, transformers' ``FineGrainedFP8Config``),
checked against transformers' ``Fp8Dequantize``. Every other quantized weight keeps its
reason, ``quantized``, and its detail says why the adapter left it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.enums import Reason
from app.matching.layouts import Quantized
from app.matching.shapes import Explanation
from app.tensors import TensorIndex, TensorInfo


@dataclass(frozen=True, slots=True)
class Dequantization:
    """How one model key is dequantized (``app.matching.adapters`` makes it an Adaptation).

    Attributes:
        key: The model key.
        scheme: ``bnb_int8`` or ``fp8`` (the merge's operation).
        checkpoint_keys: The quantized weight, its scale, then the module's other
            quantization parts, as stored in the file.
        detail: One sentence for the report.
        shape: The model's shape.
    """

    key: str
    scheme: str
    checkpoint_keys: tuple[str, ...]
    detail: str
    shape: tuple[int, ...]


NOT_PROVEN = {
    "torch_ao": (
        "not proven for torch.ao quantized models: dequantize() gives each tensor's values, "
        "but a fused model's convolutions hold their BatchNorm folded in, so no merge into "
        "the float model computes what the quantized one does"
    ),
    "gptq": (
        "not proven for GPTQ: no library that dequantizes it installs here without a GPU "
        "build (GPTQModel ships no wheel), so no test compares the result with its own"
    ),
    "awq": (
        "not proven for AWQ: no test compares it with AutoAWQ's own dequantization (an "
        "archived library whose CPU path was not verified here)"
    ),
    "compressed_tensors": (
        "not proven for compressed-tensors: no test compares it with ModelCompressor.decompress"
    ),
}
"""Scheme -> why the adapter leaves its weights, for the schemes no test proves."""

PROVEN = ("bnb_int8", "bnb_4bit", "fp8")
"""The schemes a test proves equal to the library's own dequantization."""
FP8_WEIGHTS = ("float8_e4m3fn", "float8_e5m2")
FP8_SCALES = ("float32", "bfloat16", "float16", "float8_e8m0fnu")


def dequantizations(
    quantized: Sequence[Quantized],
    *,
    missing: Mapping[str, Explanation],
    model: TensorIndex,
    sources: Mapping[str, str],
) -> tuple[list[Dequantization], dict[str, str]]:
    """The dequantize adaptation of every proven quantized weight, and why the rest are left.

    Args:
        quantized: ``Layouts.quantized`` of the aligned checkpoint.
        missing: The missing keys' explanations (a weight is adapted while its reason is
            still ``quantized``).
        model: The model index.
        sources: Aligned key -> original checkpoint key.

    Returns:
        The adaptations (model key computed from the quantized weight and all of its
        module's quantization parts, as stored), and model key -> why it is not adapted.

    Example:
        >>> from app.tensors import TensorKind
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("fc.weight", (4, 2), "float16", TensorKind.PARAMETER)]
        ... )
        >>> q = Quantized(
        ...     "bnb_int8", ("fc.weight",), ("fc.SCB", "fc.weight_format"),
        ...     stored=(TensorInfo("fc.weight", (4, 2), "int8"),
        ...             TensorInfo("fc.SCB", (4,), "float32"),
        ...             TensorInfo("fc.weight_format", (), "uint8")),
        ... )
        >>> found, _ = dequantizations(
        ...     [q], missing={"fc.weight": Explanation(Reason.QUANTIZED, "")}, model=model,
        ...     sources={},
        ... )
        >>> found[0].scheme, found[0].checkpoint_keys
        ('bnb_int8', ('fc.weight', 'fc.SCB', 'fc.weight_format'))
    """
    found: list[Dequantization] = []
    refused: dict[str, str] = {}
    for q in quantized:
        stored = {info.key: info for info in q.stored}
        for key in q.weights:
            why = missing.get(key)
            if why is None or why.reason is not Reason.QUANTIZED:
                continue
            parts = _module_parts(key, q.parts)
            outcome = _adaptation(q.scheme, key, parts, stored, model)
            if isinstance(outcome, str):
                refused[key] = outcome
                continue
            found.append(
                Dequantization(
                    key,
                    q.scheme,
                    tuple(sources.get(k, k) for k in outcome),
                    _detail(q.scheme, stored[key]),
                    tuple(model.tensors[key].shape),
                )
            )
    return found, refused


def _module_parts(weight: str, parts: Sequence[str]) -> list[str]:
    """The parts of the weight's own module (``fc.SCB`` for ``fc.weight``) and of the
    weight itself (bitsandbytes 4-bit: ``fc.weight.absmax``), as listed."""
    prefix = weight[: -len("weight")]
    return [
        p
        for p in parts
        if p.startswith(prefix) and ("." not in p[len(prefix) :] or p.startswith(f"{weight}."))
    ]


def _adaptation(
    scheme: str,
    key: str,
    parts: list[str],
    stored: Mapping[str, TensorInfo],
    model: TensorIndex,
) -> tuple[str, ...] | str:
    """The aligned keys to read, weight first then its scale, or why the layout is left."""
    if scheme not in PROVEN:
        return NOT_PROVEN.get(
            scheme, f"not proven for {scheme}: no test compares it with its library's own"
        )
    weight, expected = stored[key], model.tensors[key]
    if scheme == "bnb_4bit":
        why = _packed_4bit(weight, expected, key, parts)
        return why if why else (key, *parts)
    if len(weight.shape) != 2 or tuple(weight.shape) != tuple(expected.shape):
        return (
            f"the quantized weight is {list(weight.shape)}, the model's {list(expected.shape)}; "
            "only 2-D weights of the model's shape are proven"
        )
    leaves = {p.rpartition(".")[2]: p for p in parts}
    if scheme == "bnb_int8":
        scale, why = _int8_scale(weight, leaves, stored)
    else:
        scale, why = _fp8_scale(weight, leaves, stored)
    if scale is None:
        return why
    return (key, scale, *(p for p in parts if p != scale))


def _packed_4bit(weight: TensorInfo, expected: TensorInfo, key: str, parts: Sequence[str]) -> str:
    """Why a bitsandbytes 4-bit weight is left, or "" when its layout is the proven one.

    Its shape and block size are in the ``quant_state`` JSON, which the merge reads and
    checks; here the packed bytes must hold the model's 2-D weight, two values to a byte.
    """
    leaves = {p[len(key) + 1 :]: p for p in parts if p.startswith(f"{key}.")}
    needed = ["absmax", "quant_map"] + (["nested_quant_map"] if "nested_absmax" in leaves else [])
    states = [leaf for leaf in leaves if leaf.startswith("quant_state.bitsandbytes__")]
    if any(leaf not in leaves for leaf in needed) or len(states) != 1:
        return "its absmax, quant_map or quant_state (bitsandbytes' packed QuantState) is missing"
    if weight.dtype != "uint8":
        return f"only uint8 storage (bnb_4bit_quant_storage) is proven, not {weight.dtype}"
    if len(expected.shape) != 2 or weight.numel != -(-expected.numel // 2):
        return (
            f"{weight.numel} packed bytes do not hold the model's {list(expected.shape)} "
            "weight two values to a byte"
        )
    return ""


def _int8_scale(
    weight: TensorInfo, leaves: Mapping[str, str], stored: Mapping[str, TensorInfo]
) -> tuple[str | None, str]:
    scb = stored[leaves["SCB"]]
    if tuple(scb.shape) != (weight.shape[0],) or not scb.dtype.startswith(("float", "bfloat")):
        return None, (
            f"SCB is {scb.dtype} {list(scb.shape)}, not one float scale per row of the "
            f"weight ({weight.shape[0]})"
        )
    fmt = stored.get(leaves.get("weight_format", ""))
    if fmt is not None and fmt.numel != 1:
        return None, f"weight_format is {list(fmt.shape)}, not the one value bitsandbytes saves"
    return leaves["SCB"], ""


def _fp8_scale(
    weight: TensorInfo, leaves: Mapping[str, str], stored: Mapping[str, TensorInfo]
) -> tuple[str | None, str]:
    if "weight_scale_inv" not in leaves:
        return None, (
            "only weight_scale_inv (DeepSeek-V3, transformers' FineGrainedFP8) is proven; a "
            "weight_scale (compressed-tensors, FBGEMM) is not"
        )
    if weight.dtype not in FP8_WEIGHTS:
        return None, f"only {' and '.join(FP8_WEIGHTS)} weights are proven, not {weight.dtype}"
    scale = stored[leaves["weight_scale_inv"]]
    if scale.dtype not in FP8_SCALES:
        return None, (
            f"weight_scale_inv is {scale.dtype}; only {', '.join(FP8_SCALES)} scales are proven"
        )
    rows, cols = weight.shape
    grid = tuple(scale.shape[-2:]) if len(scale.shape) >= 2 else (1, 1)
    if scale.numel != grid[0] * grid[1] or rows % grid[0] or cols % grid[1]:
        return None, (
            f"the scale grid {list(scale.shape)} does not divide the weight {[rows, cols]} "
            "into equal blocks: the block size (config.json's weight_block_size) is not in "
            "the file, and transformers' Fp8Dequantize refuses such a grid too"
        )
    return leaves["weight_scale_inv"], ""


def _detail(scheme: str, weight: TensorInfo) -> str:
    if scheme == "bnb_4bit":
        return (
            "Dequantized from bitsandbytes 4-bit: each 4-bit code looked up in quant_map times "
            "its block's absmax (nested absmax dequantized first), in the quant_state's dtype "
            "(bitsandbytes' dequantize_4bit), cast to the model's dtype."
        )
    if scheme == "bnb_int8":
        return (
            "Dequantized from bitsandbytes LLM.int8: the int8 weight times SCB / 127 per row "
            "(bitsandbytes' int8_vectorwise_dequant), cast to the model's dtype."
        )
    return (
        f"Dequantized from FP8 ({weight.dtype}): each block of the weight times its "
        "weight_scale_inv, in float32 (transformers' Fp8Dequantize), cast to the model's dtype."
    )
