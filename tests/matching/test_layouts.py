"""Issue 11, items 1-3: files whose tensors are not the weights a float model needs.

None of the writing tools is installed here (bitsandbytes, AutoGPTQ, PEFT, DeepSpeed), so each
file reproduces its tool's layout from a real class with random init (a tiny Llama from
transformers, torchvision's resnet18); each helper names the code it follows.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_file
from torchvision.models import resnet18

from app.enums import Reason, Verdict
from app.matching.analysis import Analysis
from app.matching.report import build_report
from app.schemas import Report
from tests.matching.scenarios import analyse_file

LLAMA: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
}
LLAMA_KWARGS = {"config": LLAMA, "auto_class": "AutoModelForCausalLM"}


def _llama() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))


def _linears(model: torch.nn.Module) -> list[str]:
    """The layers quantizers replace: every nn.Linear but lm_head (transformers'
    ``replace_with_bnb_linear`` and GPTQ's default ``modules_to_not_convert``)."""
    return [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"
    ]


def _save_quantized(path: Path, layer: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Every other tensor in float16 (how the quantized model holds them), as save_pretrained
    writes a safetensors file (metadata format pt)."""
    model = _llama()
    state = {k: v.to(torch.float16) for k, v in model.state_dict().items()}
    for name in _linears(model):
        del state[f"{name}.weight"]
        state.update({f"{name}.{leaf}": t for leaf, t in layer[name].items()})
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    return path


def bnb_int8(path: Path) -> Path:
    """bitsandbytes ``Linear8bitLt._save_to_state_dict`` after ``Int8Params`` quantized the
    weight with ``int8_vectorwise_quant``: ``weight`` int8 (round(w * 127 / absmax_row)),
    ``SCB`` float32 (absmax per row), ``weight_format`` uint8 0 ("row")."""
    model, layer = _llama(), {}
    for name in _linears(model):
        w = model.get_submodule(name).weight.detach().to(torch.float16).float()
        scb = w.abs().amax(dim=1)
        q = torch.round(w * 127 / scb[:, None]).to(torch.int8)
        layer[name] = {"weight": q, "SCB": scb, "weight_format": torch.tensor(0, dtype=torch.uint8)}
    return _save_quantized(path, layer)


def fp8_block(path: Path) -> Path:
    """DeepSeek-V3 / transformers' ``FP8Linear`` (finegrained_fp8.py): ``weight``
    float8_e4m3fn and ``weight_scale_inv`` float32, one scale per 128 x 128 block."""
    model, layer = _llama(), {}
    for name in _linears(model):
        w = model.get_submodule(name).weight.detach()
        blocks = (-(-w.shape[0] // 128), -(-w.shape[1] // 128))
        scale = w.abs().amax().reshape(1, 1).expand(blocks) / 448
        layer[name] = {
            "weight": (w / scale[0, 0]).to(torch.float8_e4m3fn),
            "weight_scale_inv": scale,
        }
    return _save_quantized(path, layer)


def gptq(path: Path, bits: int = 4, group: int = 16) -> Path:
    """AutoGPTQ's ``QuantLinear`` buffers (qlinear_cuda_old.py): ``qweight`` int32
    (in * bits / 32, out), ``qzeros`` int32 (in / group, out * bits / 32), ``scales`` float16
    (in / group, out), ``g_idx`` int32 (in,); bias kept."""
    model, layer = _llama(), {}
    for name in _linears(model):
        out, inp = model.get_submodule(name).weight.shape
        layer[name] = {
            "qweight": torch.randint(0, 2**31 - 1, (inp * bits // 32, out), dtype=torch.int32),
            "qzeros": torch.randint(
                0, 2**31 - 1, (inp // group, out * bits // 32), dtype=torch.int32
            ),
            "scales": torch.rand(inp // group, out, dtype=torch.float16),
            "g_idx": torch.arange(inp, dtype=torch.int32) // group,
        }
    return _save_quantized(path, layer)


def _check_quantized(analysis: Analysis, scheme: str, parts: set[str]) -> None:
    quantized = {
        k for k, e in analysis.explanations.missing.items() if e.reason is Reason.QUANTIZED
    }
    assert quantized == {f"{n}.weight" for n in _linears(_llama())}
    assert not quantized & set(analysis.key_map)  # never merged as values
    casts = {d.checkpoint_dtype for d in analysis.result.dtype_differs}
    assert casts <= {"float16"}  # int8 or float8 weights are not "cast without loss"
    unexpected = analysis.explanations.unexpected
    assert unexpected and {e.reason for e in unexpected.values()} == {Reason.QUANTIZED}
    assert {k.rsplit(".", 1)[1] for k in unexpected} == parts
    assert analysis.verdict in (Verdict.PARTIAL, Verdict.INCOMPATIBLE)
    assert analysis.message.startswith(f"The checkpoint is quantized, {scheme}")
    assert "model.layers.0.self_attn.q_proj" in analysis.message


def test_layouts_bnb_int8_is_quantized_not_cast(tmp_path: Path) -> None:
    analysis = analyse_file(
        bnb_int8(tmp_path / "model.safetensors"), "transformers:llama", LLAMA_KWARGS
    )
    _check_quantized(analysis, "bitsandbytes LLM.int8", {"SCB", "weight_format"})
    assert "weight * SCB / 127" in analysis.message


def test_layouts_fp8_block_is_quantized(tmp_path: Path) -> None:
    analysis = analyse_file(
        fp8_block(tmp_path / "model.safetensors"), "transformers:llama", LLAMA_KWARGS
    )
    _check_quantized(analysis, "FP8", {"weight_scale_inv"})


def test_layouts_gptq_is_quantized_not_unexplained(tmp_path: Path) -> None:
    analysis = analyse_file(
        gptq(tmp_path / "model.safetensors"), "transformers:llama", LLAMA_KWARGS
    )
    _check_quantized(analysis, "GPTQ", {"qweight", "qzeros", "scales", "g_idx"})
    assert "GPTQModel" in analysis.message


def test_layouts_report_validates_with_the_new_reasons(tmp_path: Path) -> None:
    analysis = analyse_file(
        bnb_int8(tmp_path / "m.safetensors"), "transformers:llama", LLAMA_KWARGS
    )
    from app.architectures import describe

    report = build_report(
        check_id="c",
        filename="m.safetensors",
        sha256="0" * 64,
        size_bytes=1,
        analysis=analysis,
        architecture=describe("transformers:llama", LLAMA_KWARGS),
    )
    summary = Report.model_validate(report).summary
    assert summary.reasons[Reason.QUANTIZED] == 14 + 14 * 2  # weights, SCB, weight_format


def peft_lora(path: Path, rank: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """PEFT's ``save_pretrained`` of a LoRA model: ``get_peft_model_state_dict`` keeps the
    ``lora_`` tensors under ``base_model.model.<module>``, drops the adapter name, and
    ``safe_save_file(..., metadata={"format": "pt"})`` writes ``adapter_model.safetensors``."""
    model, state = _llama(), dict[str, torch.Tensor]()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, torch.nn.Linear):
            state[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, module.in_features)
            state[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(module.out_features, rank)
    save_file(state, path, metadata={"format": "pt"})
    return path


def test_layouts_peft_lora_adapter_needs_its_base_model(tmp_path: Path) -> None:
    path = peft_lora(tmp_path / "adapter_model.safetensors")
    analysis = analyse_file(path, "transformers:llama", LLAMA_KWARGS)
    assert analysis.verdict is Verdict.INCOMPATIBLE
    message = analysis.message
    assert message.startswith(
        "The checkpoint is a PEFT LoRA adapter (rank 8, target modules q_proj, v_proj; "
        "4 modules adapted)"
    )
    assert "needs its base model" in message and "check the architecture" not in message
    reasons = {e.reason for e in analysis.explanations.unexpected.values()}
    assert reasons == {Reason.ADAPTER}
    missing = {e.reason for e in analysis.explanations.missing.values()}
    assert missing <= {Reason.ADAPTER, Reason.IGNORABLE}


def zero3_model_states(path: Path, persistence_threshold: int = 100_000) -> Path:
    """DeepSpeed ZeRO-3's ``mp_rank_00_model_states.pt`` (``DeepSpeedEngine._save_checkpoint``):
    ``module`` holds the fp16 module's state_dict where every partitioned parameter is
    ``torch.empty(0)`` (``partition_parameters.py``; parameters under
    ``stage3_param_persistence_threshold`` elements stay whole), beside ``param_shapes``."""
    torch.manual_seed(0)
    model = resnet18().half()
    params = dict(model.named_parameters())
    module = {
        k: torch.empty(0, dtype=v.dtype) if k in params and v.numel() > persistence_threshold else v
        for k, v in model.state_dict().items()
    }
    state = {
        "module": module,
        "buffer_names": [n for n, _ in model.named_buffers()],
        "optimizer": None,
        "param_shapes": [collections.OrderedDict((n, p.shape) for n, p in params.items())],
        "frozen_param_shapes": None,
        "shared_params": {},
        "frozen_param_fragments": None,
        "lr_scheduler": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": 10,
        "global_samples": 80,
        "dp_world_size": 2,
        "mp_world_size": 1,
        "ds_config": {"zero_optimization": {"stage": 3}, "fp16": {"enabled": True}},
        "ds_version": "0.19.8",
    }
    torch.save(state, path)
    return path


def test_layouts_zero3_placeholders_say_how_to_consolidate(tmp_path: Path) -> None:
    path = zero3_model_states(tmp_path / "mp_rank_00_model_states.pt")
    analysis = analyse_file(path, "torchvision:resnet18")
    why = analysis.explanations.shape_mismatched
    assert why and {e.reason for e in why.values()} == {Reason.PARTITIONED}
    assert "layer4.0.conv1.weight" in why
    assert analysis.verdict is Verdict.INCOMPATIBLE
    assert "empty placeholders" in analysis.message and "zero_to_fp32" in analysis.message
    assert "dcp_to_torch_save" in analysis.message
    assert not set(why) & set(analysis.key_map)


def test_layouts_plain_llama_is_not_flagged(tmp_path: Path) -> None:
    """The same model saved plainly is compatible: the layouts come from the file."""
    model = _llama()
    save_file(model.state_dict(), tmp_path / "plain.safetensors", metadata={"format": "pt"})
    analysis = analyse_file(tmp_path / "plain.safetensors", "transformers:llama", LLAMA_KWARGS)
    assert analysis.verdict is Verdict.COMPATIBLE, analysis.message


def test_layouts_adapter_layers_the_model_has_are_no_adapter() -> None:
    """A model built with LoRA layers of its own loads them: the file is not an adapter."""
    from app.matching.layouts import find_layouts
    from app.tensors import TensorIndex, TensorInfo, TensorKind

    infos = [
        TensorInfo("q.weight", (4, 4), "float32", TensorKind.PARAMETER),
        TensorInfo("q.lora_A.weight", (2, 4), "float32", TensorKind.PARAMETER),
        TensorInfo("q.lora_B.weight", (4, 2), "float32", TensorKind.PARAMETER),
    ]
    model = TensorIndex.from_infos(infos)
    ckpt = TensorIndex.from_infos([TensorInfo(i.key, i.shape, i.dtype) for i in infos])
    assert find_layouts(ckpt, model).adapter is None
    lora_only = TensorIndex.from_infos(list(ckpt)[1:])
    adapter = find_layouts(lora_only, TensorIndex.from_infos(infos[:1])).adapter
    assert adapter is not None and (adapter.method, adapter.rank) == ("LoRA", 2)
