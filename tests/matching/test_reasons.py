"""Tests of app.matching.reasons: one test per documented reason."""

from __future__ import annotations

from app.matching.compare import compare
from app.matching.reasons import Explanations, ancestors, explain
from app.schemas import Reason
from app.tensors import TensorIndex, TensorInfo, TensorKind
from tests.matching.helpers import B, ckpt_of, model_of


def _explain(ckpt: TensorIndex, model: TensorIndex, **kwargs: object) -> Explanations:
    return explain(
        compare(ckpt, model),
        checkpoint=ckpt,
        model=model,
        sources={k: k for k in ckpt.tensors},
        architecture_kwargs=kwargs,
    )


def test_ancestors_lists_modules_outermost_first() -> None:
    assert ancestors("a.b.weight") == ["a", "a.b"]
    assert ancestors("cls_token") == []


def test_explain_head_resized_names_num_classes() -> None:
    model = model_of(("conv.w", (4, 3, 3, 3)), ("fc.weight", (10, 4)), ("fc.bias", (10,)))
    ckpt = ckpt_of(("conv.w", (4, 3, 3, 3)), ("fc.weight", (1000, 4)), ("fc.bias", (1000,)))
    why = _explain(ckpt, model, num_classes=10)
    assert {k: e.reason for k, e in why.shape_mismatched.items()} == {
        "fc.weight": Reason.HEAD_RESIZED,
        "fc.bias": Reason.HEAD_RESIZED,
    }
    assert "num_classes changed from 1000 to 10" in why.shape_mismatched["fc.weight"].detail


def test_explain_last_layer_counts_as_a_head() -> None:
    model = model_of(("body.w", (4, 4)), ("out_layer.w", (7, 4)))
    why = _explain(ckpt_of(("body.w", (4, 4)), ("out_layer.w", (5, 4))), model)
    assert why.shape_mismatched["out_layer.w"].reason is Reason.HEAD_RESIZED
    assert "its output size changed from 5 to 7" in why.shape_mismatched["out_layer.w"].detail


def test_explain_input_channels_on_the_stem_only() -> None:
    model = model_of(("stem.weight", (8, 1, 3, 3)), ("mid.weight", (8, 2, 3, 3)), ("fc.w", (2, 8)))
    ckpt = ckpt_of(("stem.weight", (8, 3, 3, 3)), ("mid.weight", (8, 4, 3, 3)), ("fc.w", (2, 8)))
    why = _explain(ckpt, model)
    assert why.shape_mismatched["stem.weight"].reason is Reason.INPUT_CHANNELS
    assert "adapt_input_conv" in why.shape_mismatched["stem.weight"].detail
    assert why.shape_mismatched["mid.weight"].reason is Reason.UNEXPLAINED


def test_explain_position_embedding_resized() -> None:
    model = model_of(
        ("pos_embed", (1, 577, 8)), ("blocks.rel.relative_position_bias_table", (9, 2))
    )
    ckpt = ckpt_of(("pos_embed", (1, 197, 8)), ("blocks.rel.relative_position_bias_table", (5, 2)))
    why = _explain(ckpt, model)
    assert {e.reason for e in why.shape_mismatched.values()} == {Reason.POSITION_EMBEDDING_RESIZED}
    assert "197 -> 577" in why.shape_mismatched["pos_embed"].detail


def test_explain_transposed_before_reshaped() -> None:
    model = model_of(("c_fc.weight", (64, 32)), ("other.w", (4, 6)))
    why = _explain(ckpt_of(("c_fc.weight", (32, 64)), ("other.w", (2, 12))), model)
    assert why.shape_mismatched["c_fc.weight"].reason is Reason.TRANSPOSED
    assert why.shape_mismatched["other.w"].reason is Reason.RESHAPED


def test_explain_dtype_cast_says_if_lossy() -> None:
    model = model_of(("w", (2,)))
    why = _explain(ckpt_of(("w", (2,)), dtype="float64"), model)
    assert why.dtype_differs["w"].reason is Reason.DTYPE_CAST
    assert why.dtype_differs["w"].detail == "Loads with a cast: float64 -> float32 loses precision."


def test_explain_ignorable_buffers_and_masks() -> None:
    model = model_of(
        ("bn.weight", (4,)),
        ("bn.num_batches_tracked", (), B),
        ("attn.bias", (1, 1, 8, 8), B),
        ("rotary.inv_freq", (4,), B),
    )
    why = _explain(ckpt_of(("bn.weight", (4,)), ("emb.position_ids", (1, 8))), model)
    assert {e.reason for e in why.missing.values()} == {Reason.IGNORABLE}
    assert why.unexpected["emb.position_ids"].reason is Reason.IGNORABLE


def test_explain_tied_alias_is_ignorable() -> None:
    model = TensorIndex.from_infos(
        [
            TensorInfo("transformer.wte.weight", (50, 8), "float32", TensorKind.PARAMETER),
            TensorInfo(
                "lm_head.weight", (50, 8), "float32", TensorKind.TIED, "transformer.wte.weight"
            ),
        ]
    )
    why = _explain(ckpt_of(("transformer.wte.weight", (50, 8))), model)
    assert why.missing["lm_head.weight"].reason is Reason.IGNORABLE
    assert "Tied to the loaded 'transformer.wte.weight'" in why.missing["lm_head.weight"].detail


def test_explain_untied_head_named_like_an_alias_is_not_ignorable() -> None:
    """Ties come from the model (parameter identity), not from names: an lm_head of its own
    (tie_word_embeddings=False) that the file lacks is new."""
    model = model_of(("transformer.wte.weight", (50, 8)), ("lm_head.weight", (50, 8)))
    why = _explain(ckpt_of(("transformer.wte.weight", (50, 8))), model)
    assert why.missing["lm_head.weight"].reason is Reason.NEW_MODULE


def test_explain_new_module_on_both_sides() -> None:
    model = model_of(("backbone.conv.w", (4,)), ("rpn.head.w", (2,)), ("rpn.head.b", (2,)))
    ckpt = ckpt_of(("backbone.conv.w", (4,)), ("backbone.fc.w", (9,)))
    why = _explain(ckpt, model)
    assert {e.reason for e in why.missing.values()} == {Reason.NEW_MODULE}
    assert why.new_modules == ("rpn",)
    assert why.unexpected["backbone.fc.w"].reason is Reason.NEW_MODULE
    assert why.checkpoint_only_modules == ("backbone.fc",)


def test_explain_unexplained_when_the_module_exists() -> None:
    model = model_of(("conv.weight", (4,)), ("conv.bias", (4,)))
    why = _explain(ckpt_of(("conv.weight", (4,)), ("conv.scale", (4,))), model)
    assert why.missing["conv.bias"].reason is Reason.UNEXPLAINED
    assert why.unexpected["conv.scale"].reason is Reason.UNEXPLAINED
    assert why.unexpected["conv.scale"].detail == (
        "The model has no tensor 'conv.scale', though it has the module 'conv'."
    )
