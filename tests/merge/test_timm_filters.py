"""timm's ``checkpoint_filter_fn`` as a candidate alignment: checkpoints laid out as their
original authors saved them, merged, and compared with timm's own loading
(``model.load_state_dict(checkpoint_filter_fn(state_dict, model))``) on the same input.

Layouts, random-init, reproduced from the authors' code:
- OpenAI CLIP (``openai/CLIP`` ``clip/model.py``, ``VisionTransformer`` under ``CLIP.visual``):
  ``visual.class_embedding``, ``visual.positional_embedding``, ``visual.conv1.weight`` (no
  bias), ``visual.ln_pre``, ``visual.transformer.resblocks.N.{ln_1, attn.in_proj_weight,
  attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``visual.ln_post``,
  ``visual.proj`` (width x output_dim), beside the text tower's ``token_embedding`` and
  ``logit_scale``.
- ConvNeXt (``facebookresearch/ConvNeXt`` ``models/convnext.py``): ``downsample_layers.0`` =
  (stem conv, LayerNorm), ``downsample_layers.i`` = (LayerNorm, conv), ``stages.i.j.{dwconv,
  norm, pwconv1, pwconv2, gamma}``, ``norm``, ``head``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.architectures import describe
from app.architectures.timm_filters import offer_filter
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.matching.filters import FILTER_OPERATION
from app.merge.write import MergeSpec, write_merged
from app.readers import read_checkpoint

timm = pytest.importorskip("timm")

WIDTH, LAYERS, PATCH, SIZE, OUT = 64, 2, 8, 32, 16
CLIP = "vit_base_patch16_clip_224"
CLIP_KWARGS: dict[str, Any] = {
    "embed_dim": WIDTH,
    "depth": LAYERS,
    "num_heads": 2,
    "img_size": SIZE,
    "patch_size": PATCH,
    "num_classes": OUT,
}
CONVNEXT = "convnext_atto"
CONVNEXT_KWARGS: dict[str, Any] = {"num_classes": 10}


def _clip_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.1

    grid = (SIZE // PATCH) ** 2
    state = {
        "visual.class_embedding": rand(WIDTH),
        "visual.positional_embedding": rand(grid + 1, WIDTH),
        "visual.proj": rand(WIDTH, OUT),
        "visual.conv1.weight": rand(WIDTH, 3, PATCH, PATCH),
        "visual.ln_pre.weight": rand(WIDTH),
        "visual.ln_pre.bias": rand(WIDTH),
    }
    for n in range(LAYERS):
        block = f"visual.transformer.resblocks.{n}."
        for name, shape in (
            ("ln_1.weight", (WIDTH,)),
            ("ln_1.bias", (WIDTH,)),
            ("attn.in_proj_weight", (3 * WIDTH, WIDTH)),
            ("attn.in_proj_bias", (3 * WIDTH,)),
            ("attn.out_proj.weight", (WIDTH, WIDTH)),
            ("attn.out_proj.bias", (WIDTH,)),
            ("ln_2.weight", (WIDTH,)),
            ("ln_2.bias", (WIDTH,)),
            ("mlp.c_fc.weight", (4 * WIDTH, WIDTH)),
            ("mlp.c_fc.bias", (4 * WIDTH,)),
            ("mlp.c_proj.weight", (WIDTH, 4 * WIDTH)),
            ("mlp.c_proj.bias", (WIDTH,)),
        ):
            state[block + name] = rand(*shape)
    state |= {
        "visual.ln_post.weight": rand(WIDTH),
        "visual.ln_post.bias": rand(WIDTH),
        "token_embedding.weight": rand(100, WIDTH),  # the text tower, which timm drops
        "logit_scale": rand(),
    }
    return state


# timm name -> the FB repo's, the inverse of timm's ConvNeXt checkpoint_filter_fn
CONVNEXT_FB = (
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."),
    (r"\.mlp\.fc(\d)\.", r".pwconv\1."),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.", "head."),
)


def _convnext_fb_state() -> dict[str, torch.Tensor]:
    model = timm.create_model(CONVNEXT, pretrained=False, **CONVNEXT_KWARGS)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in CONVNEXT_FB:
            key = re.sub(pattern, replacement, key)
        state[key] = torch.randn(value.shape, generator=generator) * 0.1
    assert "stages.1.0.pwconv1.weight" in state and "downsample_layers.1.1.weight" in state
    return state


def _merge(
    state: dict[str, torch.Tensor], name: str, kwargs: dict[str, Any], tmp_path: Path
) -> tuple[Analysis, dict[str, torch.Tensor]]:
    """The worker's path: read, trace the filter, analyse, write the merge, read it back."""
    path, out = tmp_path / "ckpt.safetensors", tmp_path / "merged.safetensors"
    save_file(state, path)
    checkpoint = read_checkpoint(path)
    architecture = offer_filter(describe(f"timm:{name}", kwargs), checkpoint.index)
    analysis = analyse(checkpoint, architecture, MatchOptions())
    write_merged(
        path,
        out,
        spec=MergeSpec(f"timm:{name}", kwargs),
        state_dict_path="",
        key_map=analysis.key_map,
        adaptations=analysis.adaptations,
        exact_init_max_bytes=1 << 30,
    )
    return analysis, load_file(out)


def _timm_loaded(state: dict[str, torch.Tensor], name: str, kwargs: dict[str, Any]) -> Any:
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
    model.load_state_dict(module.checkpoint_filter_fn(dict(state), model))
    return model


def _same(
    merged: dict[str, torch.Tensor], reference: Any, name: str, kwargs: dict[str, Any]
) -> None:
    for key, value in reference.state_dict().items():
        assert torch.equal(merged[key], value), key
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    model.load_state_dict(merged, strict=True)
    pixels = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(pixels), reference(pixels), atol=1e-6)


def test_timm_filter_loads_openai_clip_as_timm_does(tmp_path: Path) -> None:
    state = _clip_state()
    analysis, merged = _merge(state, CLIP, CLIP_KWARGS, tmp_path)
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert set(analysis.result.unexpected) == {"token_embedding.weight", "logit_scale"}
    computed = {a.key: a for a in analysis.adaptations if a.operation == FILTER_OPERATION}
    assert set(computed) == {"cls_token", "pos_embed", "head.weight", "head.bias"}
    assert computed["head.weight"].checkpoint_keys == ("visual.proj",)
    assert "transpose" in computed["head.weight"].detail
    assert computed["head.bias"].checkpoint_keys == ()
    assert analysis.alignment.names["visual.transformer.resblocks.1.attn.in_proj_weight"] == (
        "blocks.1.attn.qkv.weight"
    )
    (step,) = analysis.alignment.steps
    assert step.transform.pattern == "timm.models.vision_transformer.checkpoint_filter_fn"
    assert "drops 2 checkpoint keys" in analysis.alignment.notes[0]
    _same(merged, _timm_loaded(state, CLIP, CLIP_KWARGS), CLIP, CLIP_KWARGS)


def test_timm_filter_loads_facebook_convnext_as_timm_does(tmp_path: Path) -> None:
    state = _convnext_fb_state()
    analysis, merged = _merge(state, CONVNEXT, CONVNEXT_KWARGS, tmp_path)
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert not analysis.result.unexpected and not analysis.result.missing
    assert (
        analysis.alignment.names["stages.2.3.dwconv.weight"] == "stages.2.blocks.3.conv_dw.weight"
    )
    _same(merged, _timm_loaded(state, CONVNEXT, CONVNEXT_KWARGS), CONVNEXT, CONVNEXT_KWARGS)


def test_timm_filter_not_tried_on_a_timm_checkpoint() -> None:
    model = timm.create_model(CONVNEXT, pretrained=False, **CONVNEXT_KWARGS)
    from app.tensors import TensorIndex, TensorInfo

    index = TensorIndex.from_infos(
        TensorInfo(k, tuple(v.shape), "float32") for k, v in model.state_dict().items()
    )
    architecture = describe(f"timm:{CONVNEXT}", CONVNEXT_KWARGS)
    assert offer_filter(architecture, index) is architecture  # the cheap pre-check


def test_timm_filter_that_needs_values_is_said_not_applied(tmp_path: Path) -> None:
    """A ViT checkpoint whose patch embedding differs in size: timm resamples it with
    ``resample_patch_embed``, which on shapes alone still runs; a filter that reads values
    (``.item()``) cannot, and the report says to run it."""
    from dataclasses import replace

    from app.tensors import FilterTrace

    state = _clip_state()
    path = tmp_path / "ckpt.safetensors"
    save_file(state, path)
    checkpoint = read_checkpoint(path)
    architecture = replace(
        describe(f"timm:{CLIP}", CLIP_KWARGS),
        filter_trace=FilterTrace("timm.models.x.checkpoint_filter_fn", error="RuntimeError: item"),
    )
    analysis = analyse(checkpoint, architecture, MatchOptions())
    assert not analysis.adaptations
    assert any("could not run on this file's shapes" in n for n in analysis.alignment.notes)


def test_timm_filter_merge_keeps_checkpoint_dtypes_and_makes_the_zero_bias(tmp_path: Path) -> None:
    state = {k: v.to(torch.bfloat16) for k, v in _clip_state().items()}
    path, out = tmp_path / "ckpt.safetensors", tmp_path / "merged.safetensors"
    save_file(state, path)
    checkpoint = read_checkpoint(path)
    architecture = offer_filter(describe(f"timm:{CLIP}", CLIP_KWARGS), checkpoint.index)
    analysis = analyse(checkpoint, architecture, MatchOptions())
    spec = MergeSpec(f"timm:{CLIP}", CLIP_KWARGS, dtype_policy="checkpoint")
    write_merged(
        path,
        out,
        spec=spec,
        state_dict_path="",
        key_map=analysis.key_map,
        adaptations=analysis.adaptations,
        exact_init_max_bytes=1 << 30,
    )
    merged = load_file(out)
    assert merged["head.weight"].dtype == torch.bfloat16
    assert torch.equal(merged["head.weight"], state["visual.proj"].t())
    assert merged["head.bias"].dtype == torch.float32  # made by timm: no file dtype to keep
    assert not merged["head.bias"].any()


DEIT3 = "deit3_small_patch16_224"
DEIT3_KWARGS: dict[str, Any] = {
    "embed_dim": WIDTH,
    "depth": LAYERS,
    "num_heads": 2,
    "img_size": SIZE,
    "patch_size": PATCH,
    "num_classes": OUT,
}


def test_timm_filter_is_the_one_the_builder_binds_for_deit3(tmp_path: Path) -> None:
    """DeiT III as facebookresearch/deit saved it (``models_v2.py``, ``Layer_scale_init_Block``:
    ``gamma_1``/``gamma_2`` beside timm's other names): timm's DeiT builder passes
    ``partial(checkpoint_filter_fn, adapt_layer_scale=True)``, which renames them; the module's
    bare ``checkpoint_filter_fn`` would not."""
    model = timm.create_model(DEIT3, pretrained=False, **DEIT3_KWARGS)
    generator = torch.Generator().manual_seed(0)
    state = {
        key.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): torch.randn(
            value.shape, generator=generator
        )
        * 0.1
        for key, value in model.state_dict().items()
    }
    analysis, merged = _merge(state, DEIT3, DEIT3_KWARGS, tmp_path)
    assert analysis.result.loaded_parameter_fraction == 1.0
    (step,) = analysis.alignment.steps
    assert step.transform.pattern.endswith("checkpoint_filter_fn(adapt_layer_scale=True)")
    assert analysis.alignment.names["blocks.1.gamma_2"] == "blocks.1.ls2.gamma"
    reference = timm.create_model(DEIT3, pretrained=False, **DEIT3_KWARGS).eval()
    from timm.models.vision_transformer import checkpoint_filter_fn

    reference.load_state_dict(checkpoint_filter_fn(dict(state), reference, adapt_layer_scale=True))
    _same(merged, reference, DEIT3, DEIT3_KWARGS)
