"""transformers 5's per-expert fusions in matching: which keys are fused, in which order, and
which are refused and why (a real tiny Mixtral built on meta; checkpoint indexes only)."""

from __future__ import annotations

import pytest

from app.architectures import describe
from app.matching.analysis import MatchOptions, analyse
from app.matching.converters import buildable
from app.matching.fusions import CONVERSION, fused_shape, natural_key
from app.tensors import ArchitectureIndex, CheckpointIndex, KeyFusion, TensorIndex, TensorInfo

MIXTRAL = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 8,
    "num_local_experts": 12,
    "vocab_size": 20,
    "auto_class": "AutoModelForCausalLM",
}
SHAPES = {"w1": (8, 16), "w2": (16, 8), "w3": (8, 16)}


@pytest.fixture(scope="module")
def mixtral() -> ArchitectureIndex:
    pytest.importorskip("transformers")
    return describe("transformers:mixtral", MIXTRAL)


def _checkpoint(arch: ArchitectureIndex, experts: list[int]) -> CheckpointIndex:
    """A transformers 4.x Mixtral index: ``block_sparse_moe`` and one ``w1/w2/w3`` per expert."""
    infos = [
        TensorInfo(k.replace(".mlp.gate.", ".block_sparse_moe.gate."), i.shape, "float32")
        for k, i in arch.index.tensors.items()
        if ".experts." not in k
    ]
    infos += [
        TensorInfo(f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight", shape, "float32")
        for e in experts
        for w, shape in SHAPES.items()
    ]
    return CheckpointIndex("safetensors", TensorIndex.from_infos(infos))


def test_fusions_order_experts_as_transformers_collects_them(mixtral: ArchitectureIndex) -> None:
    analysis = analyse(_checkpoint(mixtral, list(range(12))), mixtral, MatchOptions())
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert not analysis.result.unexpected
    gate_up = next(a for a in analysis.adaptations if a.key.endswith("gate_up_proj"))
    assert gate_up.adapter == CONVERSION
    experts = [k.split(".")[5] for k in gate_up.checkpoint_keys]
    assert experts == [str(e) for e in range(12)] * 2  # 2 before 10: a numeric sort
    assert [k.rsplit(".", 2)[1] for k in gate_up.checkpoint_keys] == ["w1"] * 12 + ["w3"] * 12
    changed = {s.transform.replacement: s.keys_changed for s in analysis.alignment.steps}
    assert changed[".mlp."] == 37  # the renaming block_sparse_moe -> mlp, then the fusions
    assert changed[".experts.gate_up_proj"] == 24
    assert changed[".experts.down_proj"] == 12


def test_fusions_refuse_experts_not_numbered_from_zero(mixtral: ArchitectureIndex) -> None:
    experts = [e for e in range(13) if e != 4]  # 12 tensors, but expert 4 is absent
    analysis = analyse(_checkpoint(mixtral, experts), mixtral, MatchOptions())
    assert not analysis.adaptations
    assert analysis.result.loaded_parameter_fraction < 1.0
    notes = " ".join(analysis.alignment.notes)
    assert "not numbered 0 to N-1" in notes and "another expert's place" in notes


def test_fusions_refuse_a_missing_expert_by_shape(mixtral: ArchitectureIndex) -> None:
    analysis = analyse(_checkpoint(mixtral, list(range(11))), mixtral, MatchOptions())
    assert not analysis.adaptations
    assert "gives [11, 16, 8], the model holds [12, 16, 8]" in " ".join(analysis.alignment.notes)


def test_fusions_off_under_align_none(mixtral: ArchitectureIndex) -> None:
    analysis = analyse(_checkpoint(mixtral, list(range(12))), mixtral, MatchOptions(align="none"))
    assert not analysis.adaptations


def test_natural_key_sorts_as_transformers_dot_natural_key() -> None:
    core = pytest.importorskip("transformers.core_model_loading")
    keys = [
        "m.layers.10.experts.2.w1.weight",
        "m.layers.2.experts.10.w1.weight",
        "m.layers.2.experts.2.w1.weight",
        "m.layers.2.experts.2.w13.weight",
        "m.layers.2.experts.2.w3.weight",
        "m.layers.2.shard_11.w",
        "m.layers.2.shard_2.w",
        "m.layers.2.shard.w",
    ]
    assert sorted(keys, key=natural_key) == sorted(keys, key=core.dot_natural_key)


def test_buildable_admits_only_the_stack_then_concatenate_chain() -> None:
    def fusion(*steps: tuple[str, int]) -> KeyFusion:
        return KeyFusion("x", "t", (), ("a",), steps)

    assert buildable(fusion(("MergeModulelist", 0)))
    assert buildable(fusion(("MergeModulelist", 0), ("Concatenate", 1)))
    assert not buildable(fusion(("MergeModulelist", 0), ("Concatenate", 0)))
    assert not buildable(fusion(("MergeModulelist", 1)))
    assert not buildable(fusion(("Chunk", 0)))
    assert not buildable(fusion(("MergeModulelist", 0), ("Transpose", -1)))


def test_fused_shape_follows_stack_and_cat() -> None:
    steps = [("MergeModulelist", 0), ("Concatenate", 1)]
    assert fused_shape(steps, [[(4, 8)] * 3, [(2, 8)] * 3]) == (3, 6, 8)
    assert fused_shape(steps, [[(4, 8), (4, 9)]]) is None  # torch.stack refuses
    assert fused_shape([("MergeModulelist", 0)], [[(8, 4)] * 2]) == (2, 8, 4)
