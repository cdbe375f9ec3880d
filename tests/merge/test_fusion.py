"""Fused per-expert tensors: the merge builds them bit for bit as transformers' own converter.

The reference is the library's ``WeightConverter`` from ``get_model_conversion_mapping`` of a
real (tiny, random) transformers 5 Mixtral, fed the per-expert tensors in the order its
loader collects them; the merge builds the same key expert by expert (``app.merge.fusion``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.architectures import build_model, describe, resolve
from app.matching.analysis import MatchOptions, analyse
from app.matching.fusions import LIBRARY_FUSION
from app.merge.adapters import adapt_tensor
from app.merge.streaming import stream_merge
from app.readers import read_checkpoint
from app.readers.checkpoint import open_tensors

transformers = pytest.importorskip("transformers")

MIXTRAL = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 8,
    "num_local_experts": 3,
    "num_experts_per_tok": 2,
    "vocab_size": 20,
    "auto_class": "AutoModelForCausalLM",
}
MIXTRAL_NAME = resolve("transformers:mixtral")


def _per_expert(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A transformers 4.x Mixtral layout (``block_sparse_moe.experts.E.w1/w2/w3``), random."""
    arch = describe("transformers:mixtral", MIXTRAL)
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for key, info in arch.index.tensors.items():
        if ".experts." in key:
            continue
        state[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = torch.randn(
            info.shape, generator=generator
        ).to(dtype)
    for layer in range(2):
        for expert in range(3):
            for name, shape in (("w1", (8, 16)), ("w2", (16, 8)), ("w3", (8, 16))):
                key = f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{name}.weight"
                state[key] = torch.randn(shape, generator=generator).to(dtype)
    return state


def _library(state: dict[str, torch.Tensor], target_suffix: str, layer: int) -> torch.Tensor:
    """The fused tensor as transformers' own WeightConverter builds it, whole."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, dot_natural_key

    model = build_model(MIXTRAL_NAME, dict(MIXTRAL), device="meta")
    converter = next(
        t
        for t in get_model_conversion_mapping(model)  # type: ignore[arg-type]
        if isinstance(t, WeightConverter) and t.target_patterns[0] == target_suffix
    )
    layer_keys = [k for k in state if k.startswith(f"model.layers.{layer}.")]
    for key in sorted(layer_keys, key=dot_natural_key):
        renamed = key.replace(".block_sparse_moe.", ".mlp.")
        new_key, pattern = converter.rename_source_key(renamed)
        if pattern is not None:
            # a callable is what the loader collects when loading synchronously
            converter.add_tensor(new_key, key, pattern, (lambda k=key: state[k]))  # type: ignore[arg-type]
    out: dict[str, Any] = converter.convert(f"model.layers.{layer}.mlp{target_suffix}")
    (tensor,) = out.values()
    assert isinstance(tensor, torch.Tensor)
    return tensor


def _analysis(state: dict[str, torch.Tensor], tmp_path: Path) -> tuple[Any, Path]:
    path = tmp_path / "mixtral4x.safetensors"
    save_file(state, path)
    analysis = analyse(
        read_checkpoint(path), describe("transformers:mixtral", MIXTRAL), MatchOptions()
    )
    return analysis, path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fusion_builds_each_fused_key_as_transformers_converter(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    state = _per_expert(dtype)
    analysis, path = _analysis(state, tmp_path)
    fused = {a.key: a for a in analysis.adaptations if a.operation == LIBRARY_FUSION}
    assert sorted(fused) == sorted(
        f"model.layers.{n}.mlp.experts.{w}" for n in range(2) for w in ("gate_up_proj", "down_proj")
    )
    with open_tensors(path) as source:
        for layer in range(2):
            for suffix in (".experts.gate_up_proj", ".experts.down_proj"):
                built = adapt_tensor(fused[f"model.layers.{layer}.mlp{suffix}"], source.read)
                want = _library(state, suffix, layer)
                assert built.dtype == want.dtype == dtype
                assert torch.equal(built, want), (layer, suffix)


def test_fusion_streamed_merge_loads_strictly_with_fused_values(tmp_path: Path) -> None:
    state = _per_expert()
    analysis, path = _analysis(state, tmp_path)
    assert analysis.result.loaded_parameter_fraction == 1.0
    out = tmp_path / "merged.safetensors"
    model = build_model(MIXTRAL_NAME, dict(MIXTRAL), device="meta")
    with open_tensors(path) as source:
        merged = stream_merge(
            model,
            source,
            out,
            key_map=analysis.key_map,
            adaptations={a.key: a for a in analysis.adaptations},
            build_cpu=lambda: build_model(MIXTRAL_NAME, dict(MIXTRAL), device="cpu"),
        )
    assert merged.loaded_keys == len(model.state_dict())
    written = load_file(out)
    cpu = build_model(MIXTRAL_NAME, dict(MIXTRAL), device="cpu")
    cpu.load_state_dict(written, strict=True)
    gate_up = written["model.layers.1.mlp.experts.gate_up_proj"]
    assert torch.equal(gate_up, _library(state, ".experts.gate_up_proj", 1))
    # expert 2's rows: its w1 then its w3, as transformers' Concatenate(dim=1) puts them
    w1 = state["model.layers.1.block_sparse_moe.experts.2.w1.weight"]
    w3 = state["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    assert torch.equal(gate_up[2], torch.cat([w1, w3]))
