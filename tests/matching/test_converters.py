"""Issue 12, the libraries' own converters and leaf synonyms: old BERT ``gamma``/``beta``
LayerNorms and a ViT saved by transformers 4.x, against real transformers 5 architectures
(tiny configs, random init). The merge loads ``analysis.key_map``; a forward test proves it."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from app.architectures import describe
from app.enums import TransformKind
from app.matching.analysis import MatchOptions, analyse
from app.matching.report import build_report
from app.schemas import Verdict
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex, TensorInfo

if TYPE_CHECKING:
    import torch

BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "vocab_size": 50,
    "max_position_embeddings": 16,
}
VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
}
# transformers 4.x ViT names, from the transformers 5 ones (the inverse of its conversion).
VIT_4X = (
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)


def _index(state: dict[str, torch.Tensor]) -> CheckpointIndex:
    infos = [TensorInfo(k, tuple(v.shape), "float32") for k, v in state.items()]
    return CheckpointIndex("safetensors", TensorIndex.from_infos(infos))


def _old_bert(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A BERT state_dict named as the original TF-converted checkpoints were."""
    return {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in model.state_dict().items()
    }


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], key_map: dict[str, str]) -> None:
    model.load_state_dict({m: state[c] for m, c in key_map.items()}, strict=False)


def test_synonyms_pair_old_layernorm_names_without_a_converter() -> None:
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(transformers.BertConfig(**BERT))
    arch = replace(describe("transformers:bert", BERT), renamings=())  # synonyms alone
    analysis = analyse(_index(_old_bert(bert)), arch, MatchOptions())
    assert analysis.verdict is Verdict.COMPATIBLE
    assert analysis.result.loaded_parameter_fraction == 1.0
    kinds = {(s.transform.kind, s.transform.pattern) for s in analysis.alignment.steps}
    assert kinds == {(TransformKind.LEAF_SYNONYM, "gamma"), (TransformKind.LEAF_SYNONYM, "beta")}
    assert "LayerNorm" not in analysis.message  # nothing is left random


def test_synonyms_leave_a_file_holding_both_names_alone() -> None:
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(transformers.BertConfig(**BERT))
    state = dict(bert.state_dict())
    state["embeddings.LayerNorm.gamma"] = state["embeddings.LayerNorm.weight"]
    arch = replace(describe("transformers:bert", BERT), renamings=())
    analysis = analyse(_index(state), arch, MatchOptions())
    assert not [
        s for s in analysis.alignment.steps if s.transform.kind is TransformKind.LEAF_SYNONYM
    ]
    assert analysis.key_map["embeddings.LayerNorm.weight"] == "embeddings.LayerNorm.weight"


def test_old_bert_loads_fully_through_transformers_conversion() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    source = transformers.BertModel(transformers.BertConfig(**BERT)).eval()
    old = _old_bert(source)
    analysis = analyse(_index(old), describe("transformers:bert", BERT), MatchOptions())
    assert analysis.verdict is Verdict.COMPATIBLE
    report = build_report(
        check_id="c",
        filename="f",
        sha256="0",
        size_bytes=1,
        analysis=analysis,
        architecture=describe("transformers:bert", BERT),
    )
    assert {t["kind"] for t in report["applied_transforms"]} == {"conversion"}
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    torch.manual_seed(1)
    target = transformers.BertModel(transformers.BertConfig(**BERT)).eval()
    _load(target, old, analysis.key_map)
    ids = torch.tensor([[1, 5, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(
            source(ids).last_hidden_state, target(ids).last_hidden_state, atol=1e-6
        )


def _vit_4x(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        inner = key.removeprefix(prefix)
        for pattern, replacement in VIT_4X:
            inner = re.sub(pattern, replacement, inner)
        state[prefix + inner if key.startswith(prefix) else key] = value
    return state


@pytest.mark.parametrize(
    ("auto_class", "prefix"), [("AutoModel", ""), ("AutoModelForImageClassification", "vit.")]
)
def test_vit_saved_by_transformers_4_loads_as_from_pretrained(auto_class: str, prefix: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    kwargs = {**VIT, "auto_class": auto_class}
    arch: ArchitectureIndex = describe("transformers:vit", kwargs)
    cls = getattr(transformers, auto_class)
    torch.manual_seed(0)
    source = cls.from_config(transformers.ViTConfig(**VIT)).eval()
    old = _vit_4x(source, prefix)
    assert any(".attention.attention.query." in k for k in old)
    analysis = analyse(_index(old), arch, MatchOptions())
    assert analysis.verdict is Verdict.COMPATIBLE, analysis.message
    assert any(s.transform.kind is TransformKind.CONVERSION for s in analysis.alignment.steps)
    torch.manual_seed(1)
    target = cls.from_config(transformers.ViTConfig(**VIT)).eval()
    _load(target, old, analysis.key_map)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want, got = source(pixels), target(pixels)
    first = "logits" if prefix else "last_hidden_state"
    assert torch.allclose(getattr(want, first), getattr(got, first), atol=1e-5)


def test_mixtral_per_expert_tensors_are_fused_not_only_named() -> None:
    torch = pytest.importorskip("torch")
    kwargs = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 8,
        "num_local_experts": 2,
        "vocab_size": 20,
        "auto_class": "AutoModelForCausalLM",
    }
    arch = describe("transformers:mixtral", kwargs)
    assert arch.fusions
    state = {k: torch.zeros(i.shape) for k, i in arch.index.tensors.items() if ".experts." not in k}
    for e in range(2):
        for w, shape in (("w1", (8, 16)), ("w2", (16, 8)), ("w3", (8, 16))):
            state[f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight"] = torch.zeros(shape)
    analysis = analyse(_index(state), arch, MatchOptions())
    assert not any("fused by transformers" in n for n in analysis.alignment.notes)
    assert any("Fused 6 per-expert checkpoint tensors" in n for n in analysis.alignment.notes)
    assert analysis.result.loaded_parameter_fraction == 1.0  # tests/matching/test_fusions.py
