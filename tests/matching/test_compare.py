"""Tests of app.matching.compare."""

from __future__ import annotations

import doctest

import app.matching.compare as compare_module
from app.matching.compare import DtypeDifference, ShapeMismatch, compare, strict_loadable
from app.tensors import TensorIndex, TensorInfo, TensorKind

P = TensorKind.PARAMETER
B = TensorKind.BUFFER


def _model(*infos: tuple[str, tuple[int, ...], str, TensorKind]) -> TensorIndex:
    return TensorIndex.from_infos([TensorInfo(*info) for info in infos])


def _ckpt(*infos: tuple[str, tuple[int, ...], str]) -> TensorIndex:
    return TensorIndex.from_infos([TensorInfo(*info) for info in infos])


MODEL = _model(
    ("conv.weight", (4, 3, 3, 3), "float32", P),
    ("bn.weight", (4,), "float32", P),
    ("bn.running_mean", (4,), "float32", B),
    ("fc.weight", (10, 4), "float32", P),
    ("fc.bias", (10,), "float32", P),
)


def test_compare_docstring_example_runs() -> None:
    assert doctest.testmod(compare_module).failed == 0


def test_compare_identical_is_compatible_and_strict() -> None:
    ckpt = _ckpt(*((i.key, i.shape, i.dtype) for i in MODEL))
    result = compare(ckpt, MODEL)
    assert result.matched == tuple(MODEL.keys())
    assert result.missing == result.unexpected == ()
    assert result.shape_mismatched == ()
    assert result.dtype_differs == ()
    assert strict_loadable(ckpt, MODEL)
    assert result.loaded_parameter_numel == result.model_parameter_numel == 108 + 4 + 40 + 10
    assert result.loaded_parameter_fraction == 1.0


def test_compare_lists_keep_model_and_checkpoint_order() -> None:
    ckpt = _ckpt(
        ("zz.extra", (1,), "float32"),
        ("fc.bias", (10,), "float32"),
        ("aa.extra", (2,), "float32"),
        ("conv.weight", (4, 3, 3, 3), "float32"),
    )
    result = compare(ckpt, MODEL)
    assert result.matched == ("conv.weight", "fc.bias")
    assert result.missing == ("bn.weight", "bn.running_mean", "fc.weight")
    assert result.unexpected == ("zz.extra", "aa.extra")
    assert not strict_loadable(ckpt, MODEL)


def test_compare_shape_mismatch_is_not_matched() -> None:
    ckpt = _ckpt(*((i.key, i.shape, i.dtype) for i in MODEL if i.key != "fc.weight"))
    ckpt = TensorIndex({**ckpt.tensors, "fc.weight": TensorInfo("fc.weight", (1000, 4), "float32")})
    result = compare(ckpt, MODEL)
    assert "fc.weight" not in result.matched
    assert result.missing == result.unexpected == ()
    assert result.shape_mismatched == (ShapeMismatch("fc.weight", (1000, 4), (10, 4)),)
    assert not strict_loadable(ckpt, MODEL)
    assert result.loaded_parameter_numel == 108 + 4 + 10


def test_compare_dtype_difference_still_matches_and_loads_strictly() -> None:
    ckpt = _ckpt(*((i.key, i.shape, "float16" if i.kind is P else i.dtype) for i in MODEL))
    result = compare(ckpt, MODEL)
    assert result.matched == tuple(MODEL.keys())
    assert [d.key for d in result.dtype_differs] == [
        "conv.weight",
        "bn.weight",
        "fc.weight",
        "fc.bias",
    ]
    assert result.dtype_differs[0] == DtypeDifference("conv.weight", "float16", "float32")
    assert strict_loadable(ckpt, MODEL)


def test_compare_unexpected_keys_keep_verdict_compatible_but_not_strict() -> None:
    ckpt = _ckpt(*((i.key, i.shape, i.dtype) for i in MODEL), ("head.weight", (2,), "float32"))
    result = compare(ckpt, MODEL)
    assert not strict_loadable(ckpt, MODEL)
    assert result.unexpected == ("head.weight",)


def test_compare_nothing_matched_is_incompatible() -> None:
    ckpt = _ckpt(("conv.weight", (8, 3, 3, 3), "float32"), ("other", (1,), "float32"))
    result = compare(ckpt, MODEL)
    assert result.matched == ()
    assert result.loaded_parameter_fraction == 0.0


def test_compare_buffers_do_not_count_as_parameters() -> None:
    ckpt = _ckpt(("bn.running_mean", (4,), "float32"))
    result = compare(ckpt, MODEL)
    assert result.matched == ("bn.running_mean",)
    assert result.loaded_parameter_numel == 0


def test_compare_model_without_parameters_has_zero_fraction() -> None:
    model = _model(("running_mean", (4,), "float32", B))
    result = compare(_ckpt(("running_mean", (4,), "float32")), model)
    assert result.model_parameter_numel == 0
    assert result.loaded_parameter_fraction == 0.0


def test_compare_empty_checkpoint_is_incompatible() -> None:
    result = compare(TensorIndex(), MODEL)
    assert result.missing == tuple(MODEL.keys())
    assert not strict_loadable(TensorIndex(), MODEL)


def test_strict_loadable_is_on_the_keys_as_stored() -> None:
    """A ``module.`` prefix that alignment strips still fails ``load_state_dict(strict=True)``."""
    stored = _ckpt(*(("module." + i.key, i.shape, i.dtype) for i in MODEL))
    assert not strict_loadable(stored, MODEL)


GPT_BLOCK = _model(
    ("h.0.attn.c_attn.weight", (24, 8), "float32", P),
    ("h.0.attn.c_proj.weight", (8, 8), "float32", P),
    ("h.0.mlp.c_fc.weight", (32, 8), "float32", P),
    ("h.1.attn.c_proj.weight", (8, 8), "float32", P),
    ("ln_f.weight", (8, 8), "float32", P),
)


def test_compare_square_weight_beside_a_transposed_one_is_not_matched() -> None:
    """GPT-2's Conv1D stores every weight (in, out); the square c_proj alone cannot show it."""
    ckpt = _ckpt(
        ("h.0.attn.c_attn.weight", (8, 24), "float32"),
        ("h.0.attn.c_proj.weight", (8, 8), "float32"),
        ("h.0.mlp.c_fc.weight", (8, 32), "float32"),
        ("h.1.attn.c_proj.weight", (8, 8), "float32"),  # block h.1 shows no transpose
        ("ln_f.weight", (8, 8), "float32"),
    )
    result = compare(ckpt, GPT_BLOCK)
    assert result.matched == ("h.1.attn.c_proj.weight", "ln_f.weight")
    assert result.shape_mismatched[1] == ShapeMismatch(
        "h.0.attn.c_proj.weight", (8, 8), (8, 8), "h.0.attn.c_attn.weight"
    )
    assert result.loaded_parameter_numel == 128
