"""Tests of app.matching.modules."""

from __future__ import annotations

import doctest

import pytest

import app.matching.modules as modules_module
from app.matching.compare import compare
from app.matching.modules import ROOT_MODULE, ModuleCounts, module_path, summarize_modules
from app.tensors import TensorIndex, TensorInfo, TensorKind

P = TensorKind.PARAMETER
B = TensorKind.BUFFER


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("layer1.0.conv1.weight", ("layer1", "layer1.0")),
        ("layer1.0.weight", ("layer1", "layer1.0")),
        ("fc.weight", ("fc",)),
        ("cls_token", ("",)),
    ],
)
def test_module_path_keeps_top_two_levels(key: str, expected: tuple[str, ...]) -> None:
    assert module_path(key) == expected


def test_module_path_root_is_empty_string() -> None:
    assert ROOT_MODULE == ""


def test_summarize_modules_docstring_example_runs() -> None:
    assert doctest.testmod(modules_module).failed == 0


def test_summarize_modules_counts_per_module_in_tree_order() -> None:
    model = TensorIndex.from_infos(
        [
            TensorInfo("cls_token", (1, 8), "float32", P),
            TensorInfo("layer1.0.conv.weight", (8, 8), "float32", P),
            TensorInfo("layer1.0.bn.running_mean", (8,), "float32", B),
            TensorInfo("fc.weight", (10, 8), "float32", P),
            TensorInfo("layer1.1.conv.weight", (8, 8), "float32", P),
            TensorInfo("fc.bias", (10,), "float32", P),
        ]
    )
    ckpt = TensorIndex.from_infos(
        [
            TensorInfo("head.proj.weight", (3,), "float32"),
            TensorInfo("layer1.0.conv.weight", (8, 8), "float32"),
            TensorInfo("layer1.0.bn.running_mean", (8,), "float32"),
            TensorInfo("layer1.1.conv.weight", (8, 8), "float32"),
            TensorInfo("fc.weight", (1000, 8), "float32"),
            TensorInfo("layer1.9.extra", (1,), "float32"),
            TensorInfo("step", (), "int64"),
        ]
    )
    result = compare(ckpt, model)
    assert summarize_modules(result, ckpt, model) == [
        ModuleCounts("", 0, 1, 1, 0, 0.0),
        ModuleCounts("layer1", 3, 0, 1, 0, 1.0),
        ModuleCounts("layer1.0", 2, 0, 0, 0, 1.0),
        ModuleCounts("layer1.1", 1, 0, 0, 0, 1.0),
        ModuleCounts("layer1.9", 0, 0, 1, 0, None),
        ModuleCounts("fc", 0, 1, 0, 1, 0.0),
        ModuleCounts("head", 0, 0, 1, 0, None),
        ModuleCounts("head.proj", 0, 0, 1, 0, None),
    ]


def test_summarize_modules_fraction_is_by_elements() -> None:
    model = TensorIndex.from_infos(
        [
            TensorInfo("fc.weight", (10, 4), "float32", P),
            TensorInfo("fc.bias", (10,), "float32", P),
        ]
    )
    ckpt = TensorIndex.from_infos([TensorInfo("fc.weight", (10, 4), "float16")])
    [fc] = summarize_modules(compare(ckpt, model), ckpt, model)
    assert fc.loaded_parameter_fraction == pytest.approx(0.8)


def test_summarize_modules_buffer_only_module_has_no_fraction() -> None:
    model = TensorIndex.from_infos([TensorInfo("stats.mean", (4,), "float32", B)])
    [stats] = summarize_modules(compare(model, model), model, model)
    assert stats == ModuleCounts("stats", 1, 0, 0, 0, None)
