"""Issue 12, a named case: transformers' ViT into timm's ViT (and back) by structure.

The checkpoints are real: a random-init ``ViTForImageClassification`` written by its own
``save_pretrained`` (safetensors, transformers 4.x key names, sorted) or by ``torch.save`` of
its state_dict (transformers 5 names, registration order), and a timm ViT's state_dict. The
suggestion is applied as a user would (its options), merged by the worker's streaming merge,
and the merged model must compute what the source model computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from app.architectures import describe
from app.enums import Verdict
from app.matching.analysis import Analysis, MatchOptions, Suggestion, analyse
from app.merge.streaming import stream_merge
from app.readers import read_checkpoint
from app.readers.checkpoint import open_tensors
from app.tensors import ArchitectureIndex

DEPTH = 12
TIMM = "timm:vit_tiny_patch16_224"
# timm's LayerNorm eps is 1e-6, transformers' ViT default 1e-12: the HF side is configured to match.
HF_CONFIG = {
    "hidden_size": 192,
    "num_hidden_layers": DEPTH,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "image_size": 32,
    "patch_size": 16,
    "layer_norm_eps": 1e-6,
    "num_labels": 5,
}


def _hf(depth: int = DEPTH) -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(**{**HF_CONFIG, "num_hidden_layers": depth})
    return ViTForImageClassification(config).eval()


def _timm_kwargs(depth: int = DEPTH) -> dict[str, object]:
    return {"depth": depth, "img_size": 32, "num_classes": 5}


def _timm(depth: int = DEPTH) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", **_timm_kwargs(depth)).eval()  # type: ignore[arg-type]


def _options(suggestion: Suggestion) -> MatchOptions:
    """The suggestion's options as the service parses them from a request."""
    pasted = suggestion.options
    mapping = pasted["key_map"]
    adapt = pasted.get("adapt", [])
    assert isinstance(mapping, dict) and isinstance(adapt, list)
    return MatchOptions(key_map=tuple(mapping.items()), adapt=tuple(adapt))


def _merge(
    path: Path, architecture: ArchitectureIndex, options: MatchOptions, build: type | object
) -> tuple[Analysis, dict[str, torch.Tensor]]:
    """The worker's path: analyse with the options, stream the merge, read it back."""
    analysis = analyse(read_checkpoint(path), architecture, options)
    with torch.device("meta"):
        meta = build()  # type: ignore[operator]
    out = path.parent / "merged.safetensors"
    with open_tensors(path, state_dict_path=analysis.checkpoint.state_dict_path) as source:
        stream_merge(
            meta,
            source,
            out,
            key_map=analysis.key_map,
            adaptations={a.key: a for a in analysis.adaptations},
            build_cpu=build,  # type: ignore[arg-type]
        )
    return analysis, load_file(out)


def _no_block_crosses(mapping: Mapping[str, str], ours: str, theirs: str) -> None:
    """Every tensor of block N goes to block N (``layer.N.`` <-> ``blocks.N.``)."""
    for source, target in mapping.items():
        for part, other in ((source, target), (target, source)):
            for prefix in (ours, theirs):
                if prefix in part:
                    block = part.split(prefix)[1].split(".")[0]
                    partner = theirs if prefix == ours else ours
                    assert f"{partner}{block}." in other, (source, target)


@pytest.mark.parametrize(
    ("saved", "depth"), [("save_pretrained", DEPTH), ("state_dict", DEPTH), ("save_pretrained", 2)]
)
def test_hf_vit_into_timm_vit_suggestion_computes_the_same_logits(
    tmp_path: Path, saved: str, depth: int
) -> None:
    """Two blocks too: without stack positions they would read the same, and pair crosswise."""
    timm_vit = describe(TIMM, _timm_kwargs(depth))
    hf = _hf(depth)
    if saved == "save_pretrained":
        hf.save_pretrained(tmp_path)
        path = tmp_path / "model.safetensors"
    else:
        path = tmp_path / "vit.pt"
        torch.save(hf.state_dict(), path)
    first = analyse(read_checkpoint(path), timm_vit, MatchOptions())
    assert first.verdict is not Verdict.COMPATIBLE  # never applied automatically
    assert len(first.suggestions) == 1
    suggestion = first.suggestions[0]
    assert (suggestion.verdict, suggestion.loaded_parameter_fraction) == (Verdict.COMPATIBLE, 1.0)
    assert suggestion.options["adapt"] == ["qkv"]
    assert suggestion.options["architecture_kwargs"] == _timm_kwargs(depth)
    mapping = suggestion.options["key_map"]
    assert isinstance(mapping, dict)
    layer = "encoder.layer." if saved == "save_pretrained" else "layers."
    _no_block_crosses(mapping, layer, "blocks.")
    analysis, merged = _merge(path, timm_vit, _options(suggestion), lambda: _timm(depth))
    assert (analysis.verdict, analysis.result.loaded_parameter_fraction) == (Verdict.COMPATIBLE, 1)
    assert {a.key for a in analysis.adaptations} == {
        f"blocks.{i}.attn.qkv.{leaf}" for i in range(depth) for leaf in ("weight", "bias")
    }
    model = _timm(depth)
    model.load_state_dict(merged, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, atol=1e-5, rtol=1e-4)


def test_timm_vit_into_hf_vit_suggestion_computes_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _timm()
    path = tmp_path / "timm_vit.pt"
    torch.save(source.state_dict(), path)
    kwargs = {**HF_CONFIG, "auto_class": "AutoModelForImageClassification"}
    architecture = describe("transformers:vit", kwargs)
    first = analyse(read_checkpoint(path), architecture, MatchOptions())
    assert len(first.suggestions) == 1
    suggestion = first.suggestions[0]
    assert (suggestion.verdict, suggestion.loaded_parameter_fraction) == (Verdict.COMPATIBLE, 1.0)
    assert suggestion.options["adapt"] == ["qkv"]
    mapping = suggestion.options["key_map"]
    assert isinstance(mapping, dict)
    _no_block_crosses(mapping, "blocks.", "layers.")

    def build() -> nn.Module:
        return ViTForImageClassification(ViTConfig(**HF_CONFIG))

    analysis, merged = _merge(path, architecture, _options(suggestion), build)
    assert analysis.result.loaded_parameter_fraction == 1.0
    target = build().eval()
    target.load_state_dict(merged, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(pixel_values=x).logits, source(x), atol=1e-5, rtol=1e-4)
