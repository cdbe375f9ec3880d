"""Issue 10, defects 5 and 6: checkpoints laid out as timm, torchvision, transformers and nanoGPT
save them (random init of the real classes, tiny configs), analysed against real architectures.

Each test says whose layout it follows. The matching engine only sees indexes, so the model
side is the class's ``state_dict()`` (as ``app.architectures`` builds it on meta) and the
checkpoint side is what the project writes to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from app.matching.analysis import Analysis, MatchOptions, analyse
from app.matching.report import build_report
from app.schemas import Reason, Verdict
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex

if TYPE_CHECKING:
    import torch

ModelIndex = Callable[["torch.nn.Module"], TensorIndex]
CkptIndex = Callable[[Mapping[str, "torch.Tensor"]], TensorIndex]

# transformers' convert_vit_timm_to_pytorch.py, for the ViT naming of transformers 5.
TIMM_TO_HF_VIT = (
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.attn\.", r"layers.\1.attention."),
    (r"^blocks\.(\d+)\.", r"layers.\1."),
    (r"^norm\.", "layernorm."),
)
HF_VIT_TO_TORCHVISION = (
    (r"^embeddings\.cls_token$", "class_token"),
    (r"^embeddings\.position_embeddings$", "encoder.pos_embedding"),
    (r"^embeddings\.patch_embeddings\.projection\.", "conv_proj."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"encoder.layers.encoder_layer_\1.ln_1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"encoder.layers.encoder_layer_\1.ln_2."),
    (
        r"^layers\.(\d+)\.attention\.o_proj\.",
        r"encoder.layers.encoder_layer_\1.self_attention.out_proj.",
    ),
    (r"^layers\.(\d+)\.attention\.", r"encoder.layers.encoder_layer_\1.self_attention."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layers.encoder_layer_\1.mlp.0."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layers.encoder_layer_\1.mlp.3."),
    (r"^layernorm\.", "encoder.ln."),
)


def _analyse(
    ckpt: TensorIndex,
    model: TensorIndex,
    kwargs: Mapping[str, object] | None = None,
    **options: Any,
) -> Analysis:
    architecture = ArchitectureIndex("plugin:real", "plugin", dict(kwargs or {}), model)
    return analyse(CheckpointIndex("torch_zip", ckpt), architecture, MatchOptions(**options))


def _reasons(analysis: Analysis) -> dict[str, Reason]:
    why = analysis.explanations
    groups = (why.missing, why.unexpected, why.shape_mismatched)
    return {key: e.reason for group in groups for key, e in group.items()}


def _timm_vit(**kwargs: Any) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, **kwargs
    )


def _hf_vit(**kwargs: Any) -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        **kwargs,
    )
    return ViTModel(config)


# ---------------------------------------------------------------- 5. fused and split attention


def test_timm_fused_qkv_into_hf_vit_is_reshaped_on_both_sides(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """timm's ``blocks.N.attn.qkv`` into transformers' split ``q_proj``/``k_proj``/``v_proj``,
    renamed as transformers' own timm conversion script does: reshaped, never a new module."""
    analysis = _analyse(
        checkpoint_index(_timm_vit(num_classes=0).state_dict()),
        model_index(_hf_vit()),
        rename=TIMM_TO_HF_VIT,
    )
    reasons = _reasons(analysis)
    attention = {k: r for k, r in reasons.items() if ".attention." in k and "o_proj" not in k}
    assert len(attention) == 2 * (6 + 2)  # per block: q/k/v weight and bias, qkv weight and bias
    assert set(attention.values()) == {Reason.RESHAPED}
    assert analysis.explanations.new_modules == ("pooler",)
    assert analysis.explanations.checkpoint_only_modules == ()
    detail = analysis.explanations.unexpected["layers.0.attention.qkv.weight"].detail
    assert "'layers.0.attention.q_proj.weight', 'layers.0.attention.k_proj.weight'" in detail
    assert "split it along dim 0 into parts of 32, 32, 32 (query, key, value" in detail
    detail = analysis.explanations.missing["layers.1.attention.v_proj.bias"].detail
    assert "fuses query, key, value in 'blocks.1.attn.qkv.bias'" in detail
    assert "its slice 64:96 along dim 0" in detail
    assert analysis.verdict is Verdict.PARTIAL
    assert "Attention projections are fused on one side and split on the other" in (
        analysis.message
    )
    assert "pooler is new" in analysis.message
    assert "attention" not in analysis.message.split("pooler is new")[0]


def test_hf_split_attention_into_torchvision_in_proj_is_reshaped(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """transformers' ViT (split q/k/v) into torchvision's ``nn.MultiheadAttention``
    (``in_proj_weight``/``in_proj_bias``, tensors of the attention module itself)."""
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=128
    )
    analysis = _analyse(
        checkpoint_index(_hf_vit().state_dict()),
        model_index(model),
        rename=HF_VIT_TO_TORCHVISION,
    )
    why = analysis.explanations
    block = "encoder.layers.encoder_layer_0.self_attention."
    assert why.missing[block + "in_proj_weight"].reason is Reason.RESHAPED
    assert why.missing[block + "in_proj_bias"].detail.startswith(
        "The checkpoint splits this fused projection into 3 tensors: concatenate "
        "'layers.0.attention.q_proj.bias', 'layers.0.attention.k_proj.bias', "
        "'layers.0.attention.v_proj.bias' (query, key, value, in that order) along dim 0."
    )
    assert why.unexpected[block + "k_proj.weight"].reason is Reason.RESHAPED
    assert set(why.new_modules) == {"heads"}
    assert not [k for k in why.checkpoint_only_modules if "attention" in k]
    assert analysis.verdict is Verdict.PARTIAL


class _NanoGPT:
    """Karpathy's nanoGPT ``model.py`` (GPT, Block, CausalSelfAttention, MLP), module for module:
    ``nn.Linear`` everywhere, ``lm_head`` tied to ``wte``, no causal-mask buffer with SDPA."""

    @staticmethod
    def build(n_embd: int, n_layer: int, vocab: int, block: int) -> torch.nn.Module:
        from torch import nn

        def linear(i: int, o: int) -> nn.Linear:
            return nn.Linear(i, o, bias=True)

        def layer() -> nn.Module:
            blk = nn.Module()
            blk.ln_1 = nn.LayerNorm(n_embd)
            blk.attn = nn.Module()
            blk.attn.c_attn = linear(n_embd, 3 * n_embd)
            blk.attn.c_proj = linear(n_embd, n_embd)
            blk.ln_2 = nn.LayerNorm(n_embd)
            blk.mlp = nn.Module()
            blk.mlp.c_fc = linear(n_embd, 4 * n_embd)
            blk.mlp.c_proj = linear(4 * n_embd, n_embd)
            return blk

        gpt = nn.Module()
        gpt.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, n_embd),
                "wpe": nn.Embedding(block, n_embd),
                "h": nn.ModuleList([layer() for _ in range(n_layer)]),
                "ln_f": nn.LayerNorm(n_embd),
            }
        )
        gpt.lm_head = nn.Linear(n_embd, vocab, bias=False)
        gpt.transformer["wte"].weight = gpt.lm_head.weight
        return gpt


def test_gpt2_conv1d_into_nanogpt_marks_the_square_c_proj_transposed(
    model_index: ModelIndex, checkpoint_index: CkptIndex, tmp_path: Path
) -> None:
    """transformers' GPT-2 as ``save_pretrained`` writes it (Conv1D weights stored (in, out))
    into nanoGPT (nn.Linear, (out, in)), what nanoGPT's ``from_pretrained`` loads by transposing
    four weights. ``attn.c_proj`` is square: its shape matches, its layout does not."""
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=128, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    analysis = _analyse(checkpoint_index(stored), model_index(_NanoGPT.build(32, 2, 128, 64)))

    transposed = {
        f"transformer.h.{i}.{name}.weight"
        for i in range(2)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    reasons = _reasons(analysis)
    assert {k for k, r in reasons.items() if r is Reason.TRANSPOSED} == transposed
    assert not transposed & set(analysis.key_map)
    detail = analysis.explanations.shape_mismatched["transformer.h.0.attn.c_proj.weight"].detail
    assert "'transformer.h.0.attn.c_attn.weight' in the same block is stored transposed" in detail
    assert analysis.verdict is Verdict.PARTIAL


# ---------------------------------------------------------------- 6. other defects


def test_strict_loadable_is_false_for_a_dataparallel_file(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """``nn.DataParallel(model).state_dict()`` keys start with ``module.``: alignment strips
    it, but ``load_state_dict(strict=True)`` on the file as stored fails, as the README says."""
    import torch
    import torchvision

    model = torchvision.models.resnet18()
    stored = torch.nn.DataParallel(model).state_dict()
    architecture = ArchitectureIndex("torchvision:resnet18", "torchvision", {}, model_index(model))

    def summary(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        analysis = analyse(
            CheckpointIndex("torch_zip", checkpoint_index(state)), architecture, MatchOptions()
        )
        report = build_report(
            check_id="c", filename="f.pth", sha256="0" * 64, size_bytes=1,
            analysis=analysis, architecture=architecture,
        )  # fmt: skip
        result: dict[str, Any] = report["summary"]
        return result

    assert (summary(stored)["verdict"], summary(stored)["strict_loadable"]) == ("compatible", False)
    assert summary(model.state_dict())["strict_loadable"] is True


@pytest.mark.parametrize(
    ("build", "stem"),
    [
        (lambda c: _timm_vit(in_chans=c), "patch_embed.proj.weight"),
        (lambda c: _hf_vit(num_channels=c), "embeddings.patch_embeddings.projection.weight"),
    ],
    ids=["timm", "transformers"],
)
def test_vit_with_four_input_channels_is_input_channels(
    model_index: ModelIndex,
    checkpoint_index: CkptIndex,
    build: Callable[[int], torch.nn.Module],
    stem: str,
) -> None:
    """A ViT's first 3-D parameters are ``cls_token``/``pos_embed``; the stem is the patch
    embedding's convolution (timm's and transformers' layouts)."""
    analysis = _analyse(checkpoint_index(build(3).state_dict()), model_index(build(4)))
    why = analysis.explanations.shape_mismatched
    assert list(why) == [stem]
    assert why[stem].reason is Reason.INPUT_CHANNELS
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES


def test_roberta_longer_position_table_gets_text_advice(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """RoBERTa's 514-row ``position_embeddings`` (512 tokens + 2 padding offsets) into a
    RoBERTa with 1026 positions: extend the table, not "resample an image embedding"."""
    from transformers import RobertaConfig, RobertaModel

    def roberta(positions: int) -> torch.nn.Module:
        config = RobertaConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=positions,
        )  # fmt: skip
        return RobertaModel(config)

    analysis = _analyse(
        checkpoint_index(roberta(514).state_dict()),
        model_index(roberta(1026)),
        {"max_position_embeddings": 1026},
    )
    key = "embeddings.position_embeddings.weight"
    why = analysis.explanations.shape_mismatched[key]
    assert why.reason is Reason.POSITION_EMBEDDING_RESIZED
    assert "max_position_embeddings changed from 514 to 1026" in why.detail
    assert "Extend it" in why.detail
    assert "resample_abs_pos_embed" not in why.detail + analysis.message
    assert f"The position table {key} has 514 rows in the checkpoint" in analysis.message
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES


def test_swin_window_change_gives_one_sentence_for_all_relative_tables(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """torchvision's Swin (one ``relative_position_bias_table`` per block) with a window of 7
    into one of 8: one sentence for the tables, each table's detail on the window."""
    from torchvision.models.swin_transformer import SwinTransformer

    def swin(window: int) -> torch.nn.Module:
        model: torch.nn.Module = SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2],
            window_size=[window, window], num_classes=10,
        )  # fmt: skip
        return model

    analysis = _analyse(checkpoint_index(swin(7).state_dict()), model_index(swin(8)))
    why = analysis.explanations.shape_mismatched
    tables = {k: e for k, e in why.items() if k.endswith("relative_position_bias_table")}
    assert len(tables) == 4
    assert {e.reason for e in tables.values()} == {Reason.POSITION_EMBEDDING_RESIZED}
    assert all("resize_rel_pos_bias_table" in e.detail for e in tables.values())
    indexes = {e.reason for k, e in why.items() if k.endswith("relative_position_index")}
    assert indexes == {Reason.IGNORABLE}  # rebuilt from the window: the model's own is kept
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES
    assert analysis.message.count("relative-position") == 1
    assert "relative-position tables of 4 attention blocks changed size ([169, 1] -> [225, 1]" in (
        analysis.message
    )
    assert "resample_abs_pos_embed" not in analysis.message
