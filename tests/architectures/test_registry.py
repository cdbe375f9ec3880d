"""Tests of listing, resolving and describing architectures."""

from __future__ import annotations

import pytest
import torch
import torchvision

from app.architectures import describe, list_architectures, resolve
from app.architectures.registry import index_model
from app.errors import ArchitectureArgumentsError, ArchitectureNotFoundError
from app.names import suggest_names
from app.tensors import TensorInfo, TensorKind


def test_list_architectures_sorted_by_name_then_source() -> None:
    names = list_architectures()
    assert names == sorted(names, key=lambda q: (q.name, q.source))
    sources = {q.source for q in names}
    assert {"torchvision", "timm"} <= sources


def test_list_architectures_filters_by_source() -> None:
    names = list_architectures(source="torchvision")
    assert {q.source for q in names} == {"torchvision"}
    assert "fasterrcnn_resnet50_fpn" in {q.name for q in names}
    assert "raft_small" in {q.name for q in names}
    assert "quantized_resnet18" in {q.name for q in names}


def test_list_architectures_returns_a_fresh_list() -> None:
    list_architectures(source="timm").clear()
    assert list_architectures(source="timm")


def test_list_architectures_timm_has_no_pretrained_tags() -> None:
    assert all("." not in q.name for q in list_architectures(source="timm"))


def test_list_architectures_unknown_source_is_not_found() -> None:
    with pytest.raises(ArchitectureNotFoundError, match="Unknown architecture source 'keras'"):
        list_architectures(source="keras")


def test_resolve_bare_name_prefers_torchvision() -> None:
    assert str(resolve("resnet18")) == "torchvision:resnet18"


def test_resolve_bare_name_falls_back_to_timm() -> None:
    assert str(resolve("vit_base_patch16_224")) == "timm:vit_base_patch16_224"


def test_resolve_qualified_name_uses_its_source() -> None:
    assert str(resolve("timm:resnet18")) == "timm:resnet18"


def test_resolve_unknown_name_suggests_close_names() -> None:
    with pytest.raises(
        ArchitectureNotFoundError, match=r"GET /v1/architectures\?q=resnet51"
    ) as info:
        resolve("resnet51")
    assert info.value.status == 404
    suggestions = info.value.extensions["suggestions"]
    assert "torchvision:resnet50" in suggestions
    assert len(suggestions) <= 5
    assert "Did you mean" in info.value.detail


def test_resolve_qualified_name_missing_from_its_source_is_not_found() -> None:
    with pytest.raises(
        ArchitectureNotFoundError, match="Unknown architecture 'torchvision:vit_tiny"
    ):
        resolve("torchvision:vit_tiny_patch16_224")


def test_suggest_names_matches_qualified_names() -> None:
    assert "timm:resnet18" in suggest_names("timm:resnet81", list_architectures())


def test_describe_resnet18_matches_a_normal_state_dict() -> None:
    arch = describe("torchvision:resnet18", {})
    expected = torchvision.models.resnet18().state_dict()
    assert arch.index.keys() == list(expected)
    for info in arch.index:
        tensor = expected[info.key]
        assert info.shape == tuple(tensor.shape)
        assert info.dtype == str(tensor.dtype).removeprefix("torch.")
    assert arch.name == "torchvision:resnet18"
    assert arch.source == "torchvision"
    assert arch.notes == ()


def test_describe_resnet18_kinds_parameters_and_buffers() -> None:
    index = describe("resnet18", {}).index
    assert index.tensors["conv1.weight"].kind is TensorKind.PARAMETER
    assert index.tensors["bn1.running_mean"].kind is TensorKind.BUFFER
    assert index.tensors["bn1.num_batches_tracked"].kind is TensorKind.BUFFER
    assert index.tensors["bn1.num_batches_tracked"].dtype == "int64"
    assert index.parameter_numel == sum(
        p.numel() for p in torchvision.models.resnet18().parameters()
    )


def test_describe_num_classes_changes_the_head() -> None:
    arch = describe("resnet18", {"num_classes": 10})
    assert arch.index.tensors["fc.weight"].shape == (10, 512)
    assert arch.index.tensors["fc.bias"].shape == (10,)
    assert arch.kwargs == {"num_classes": 10}


def test_describe_misspelled_kwarg_quotes_the_constructor() -> None:
    with pytest.raises(
        ArchitectureArgumentsError, match="got an unexpected keyword argument 'num_clases'"
    ) as info:
        describe("resnet18", {"num_clases": 10})
    assert info.value.status == 422
    assert info.value.extensions["architecture"] == "torchvision:resnet18"


def test_describe_non_json_kwargs_are_refused() -> None:
    with pytest.raises(ArchitectureArgumentsError, match="must be JSON values"):
        describe("resnet18", {"num_classes": object()})


def test_describe_nan_kwarg_is_refused() -> None:
    with pytest.raises(ArchitectureArgumentsError, match="must be JSON values"):
        describe("resnet18", {"dropout": float("nan")})


def test_describe_unknown_name_is_not_found() -> None:
    with pytest.raises(ArchitectureNotFoundError, match="Unknown architecture 'resnet51'"):
        describe("resnet51", {})


def test_describe_caches_same_name_and_kwargs() -> None:
    first = describe("torchvision:resnet18", {"num_classes": 7, "zero_init_residual": False})
    again = describe("resnet18", {"zero_init_residual": False, "num_classes": 7})
    assert again is first
    assert describe("resnet18", {"num_classes": 8}) is not first


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def test_index_model_keeps_tied_aliases_and_persistent_buffers_only() -> None:
    model = _Tied()
    index, skipped = index_model(model)
    assert index.keys() == list(model.state_dict())
    assert index.keys() == ["steps", "embed.weight", "head.weight"]
    assert index.tensors["embed.weight"].kind is TensorKind.PARAMETER
    # A second name of a parameter: counted once, as model.parameters() does (issue 11).
    assert index.tensors["head.weight"] == TensorInfo(
        "head.weight", (5, 3), "float32", TensorKind.TIED, "embed.weight"
    )
    assert index.parameter_numel == sum(p.numel() for p in model.parameters())
    assert index.tensors["steps"] == TensorInfo("steps", (), "int64", TensorKind.BUFFER)
    assert skipped == []
