"""Reasons, verdict and message for files whose tensors are not plain weights
(``app.matching.layouts``): ``quantized``, ``adapter`` and ``partitioned``.

Each overrides what names and shapes alone would say ("unexplained", "new: train them",
"cast without loss"): the file is quantized, or an adapter, or a partition, and the message
says so first, with what would be needed. A quantized weight is never merged as its
stored values: the message names the tool that converts it, and only the opt-in
``dequantize`` adapter (``app.matching.dequantization``) loads the layouts a test proves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from app.enums import Reason, Verdict
from app.matching.dequantization import PROVEN
from app.matching.layouts import Adapter, Layouts, Quantized
from app.matching.reasons import Explanations, holders
from app.matching.shapes import Explanation

SCHEMES = {
    "bnb_int8": (
        "bitsandbytes LLM.int8 (int8 weights with SCB row scales)",
        "load it with bitsandbytes into a quantized model, or dequantize it first "
        "(weight * SCB / 127 per row: bitsandbytes' int8_vectorwise_dequant, as transformers' "
        "model.dequantize() does) and check the result",
    ),
    "bnb_4bit": (
        "bitsandbytes 4-bit (packed uint8 weights with absmax and quant_map)",
        "load it with bitsandbytes into a quantized model, or dequantize it first "
        "(bitsandbytes.functional.dequantize_4bit, as transformers' model.dequantize() does) "
        "and check the result",
    ),
    "fp8": (
        "FP8 (float8 weights with weight_scale_inv block scales)",
        "dequantize it first (each weight block times its scale: transformers' "
        "FineGrainedFP8Config(dequantize=True), or DeepSeek-V3's fp8_cast_bf16.py) and check "
        "the result",
    ),
    "gptq": (
        "GPTQ (packed qweight with scales, qzeros and g_idx)",
        "load it with GPTQModel or AutoGPTQ (transformers with a GPTQ backend), dequantize it "
        "there and save a float state_dict, then check that",
    ),
    "awq": (
        "AWQ (packed qweight with scales and qzeros)",
        "load it with AutoAWQ (transformers with an AWQ backend), dequantize it there and save "
        "a float state_dict, then check that",
    ),
    "compressed_tensors": (
        "compressed-tensors (weight_packed with weight_scale)",
        "decompress it with compressed-tensors (ModelCompressor.decompress) and check the result",
    ),
    "torch_ao": (
        "PyTorch eager-mode quantization (torch.ao.quantization: qint8/quint8 tensors with "
        "their scale and zero_point; convolutions fused with their BatchNorm carry it folded "
        "in)",
        "check it against the quantized architecture it was converted from "
        "(torchvision.models.quantization.*, or the model after prepare and convert), or "
        "check the float checkpoint it was made from",
    ),
}
"""Scheme -> (what it is, what would be needed)."""

CONSOLIDATE = (
    "consolidate it first: for DeepSpeed, run zero_to_fp32.py from the checkpoint directory "
    "(python zero_to_fp32.py . pytorch_model.bin, or deepspeed.utils.zero_to_fp32."
    "get_fp32_state_dict_from_zero_checkpoint); for FSDP, save a FULL_STATE_DICT or convert "
    "the distributed checkpoint with torch.distributed.checkpoint.format_utils."
    "dcp_to_torch_save; then check the consolidated file"
)


def relabel(
    explanations: Explanations, layouts: Layouts, *, sources: Mapping[str, str]
) -> Explanations:
    """Give the keys of recognised layouts their reason; leave every other key as it was.

    Args:
        explanations: The reasons from names and shapes.
        layouts: ``find_layouts`` of the aligned checkpoint.
        sources: Aligned key -> original checkpoint key.

    Returns:
        The explanations with ``quantized``, ``adapter`` and ``partitioned`` keys, and the
        new and checkpoint-only module lists without the modules they explain.
    """
    missing = dict(explanations.missing)
    unexpected = dict(explanations.unexpected)
    mismatched = dict(explanations.shape_mismatched)
    for q in layouts.quantized:
        name = SCHEMES[q.scheme][0]
        for key in q.weights:
            if key in missing:
                missing[key] = Explanation(
                    Reason.QUANTIZED,
                    f"The file stores it quantized, {name}: not values a float model loads, "
                    "so it is not loaded.",
                )
        for key in q.parts:
            if key in unexpected:
                unexpected[key] = Explanation(
                    Reason.QUANTIZED, f"Part of the {name} quantization of its module."
                )
    if layouts.adapter is not None:
        _relabel_adapter(layouts.adapter, missing, unexpected)
    for key in layouts.placeholders:
        if key in mismatched:
            mismatched[key] = Explanation(
                Reason.PARTITIONED,
                "An empty placeholder: the weights of a partitioned run (DeepSpeed ZeRO-3, "
                "FSDP) live in other files; consolidate the checkpoint first.",
            )
    new = holders({k for k, e in missing.items() if e.reason is Reason.NEW_MODULE})
    unused = holders(
        {sources.get(k, k) for k, e in unexpected.items() if e.reason is Reason.NEW_MODULE}
    )
    return replace(
        explanations,
        missing=missing,
        unexpected=unexpected,
        shape_mismatched=mismatched,
        new_modules=tuple(m for m in explanations.new_modules if m in new),
        checkpoint_only_modules=tuple(
            m for m in explanations.checkpoint_only_modules if m in unused
        ),
    )


def _relabel_adapter(
    adapter: Adapter, missing: dict[str, Explanation], unexpected: dict[str, Explanation]
) -> None:
    for key in unexpected:
        if key in adapter.keys:
            unexpected[key] = Explanation(
                Reason.ADAPTER, f"A {adapter.method} adapter tensor: it modifies a base weight."
            )
    for key, e in missing.items():
        if e.reason is not Reason.IGNORABLE:
            missing[key] = Explanation(
                Reason.ADAPTER,
                "The file is an adapter and holds no base weights: this one comes from the "
                "base model.",
            )


def settle_layout_verdict(verdict: Verdict, layouts: Layouts) -> Verdict:
    """An adapter is no model to load: ``incompatible`` whatever else loads (a
    ``modules_to_save`` head, say). Quantized and partitioned keys are no expected change, so
    the usual rules already give ``partial`` or ``incompatible``."""
    return Verdict.INCOMPATIBLE if layouts.adapter is not None else verdict


def layout_sentences(layouts: Layouts, *, dequantized: Collection[str] = ()) -> list[str]:
    """The message's first sentences: what the file is, and what would be needed.

    Args:
        layouts: ``find_layouts`` of the aligned checkpoint.
        dequantized: Model keys the ``dequantize`` adapter loaded (``options.adapt``).
    """
    out = [_quantized_sentence(q, dequantized) for q in layouts.quantized]
    adapter = layouts.adapter
    if adapter is not None:
        rank = f"rank {adapter.rank}, " if adapter.rank is not None else ""
        out.append(
            f"The checkpoint is a PEFT {adapter.method} adapter ({rank}target modules "
            f"{', '.join(adapter.target_modules)}; {adapter.modules} modules adapted), not full "
            "weights: it needs its base model. Load the base model, apply the adapter with "
            "peft (PeftModel.from_pretrained), merge it (merge_and_unload()) and check the "
            "merged weights instead."
        )
    if layouts.placeholders:
        n = len(layouts.placeholders)
        out.append(
            f"{n} of the checkpoint's tensors are empty placeholders where the model has "
            f"weights (e.g. {layouts.placeholders[0]}): the file is one partition of a sharded "
            f"run (DeepSpeed ZeRO-3, FSDP), not the weights; {CONSOLIDATE}."
        )
    return out


def _quantized_sentence(q: Quantized, dequantized: Collection[str]) -> str:
    name, needed = SCHEMES[q.scheme]
    done = [k for k in q.weights if k in dequantized]
    left = [k for k in q.weights if k not in dequantized]
    if done:
        example = done[0].rsplit(".", 1)[0]
        said = (
            f"The checkpoint is quantized, {name}: {len(done)} weights (e.g. {example}) were "
            "dequantized into the model's dtype by the dequantize adapter (keys.adapted)"
        )
        if not left:
            return said + "."
        return (
            f"{said}; the other {len(left)} (e.g. {left[0].rsplit('.', 1)[0]}) are not loaded, "
            f"their details say why; {needed}."
        )
    example = q.weights[0].rsplit(".", 1)[0]
    adapter = (
        ""
        if q.scheme not in PROVEN
        else '; or check it with "adapt": ["dequantize"], which does that in the merge'
    )
    return (
        f"The checkpoint is quantized, {name}: {len(q.weights)} weights (e.g. {example}) are "
        f"not values a float model can load, so they are not loaded; {needed}{adapter}."
    )
