"""Tests of app.merge.reference, on tiny torch modules and a real torchvision resnet18."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import app.merge.reference as merge_module
from app.matching.compare import compare
from app.merge.reference import merge_state_dict
from app.tensors import TensorIndex

ModelIndex = Callable[[nn.Module], TensorIndex]
CheckpointIndexOf = Callable[[Mapping[str, torch.Tensor]], TensorIndex]


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)
    ).eval()


def _small(num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, num_classes)
    )


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def _assert_same(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)  # safetensors files store keys sorted
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _loaded(
    checkpoint: Mapping[str, torch.Tensor],
    model: nn.Module,
    model_index: ModelIndex,
    checkpoint_index: CheckpointIndexOf,
) -> dict[str, torch.Tensor]:
    result = compare(checkpoint_index(checkpoint), model_index(model))
    return {key: checkpoint[key] for key in result.matched}


@pytest.fixture(scope="module")
def resnet_merge() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(checkpoint, initial, matched keys) for resnet18(1000) into resnet18(10)."""
    torch.manual_seed(0)
    checkpoint = resnet18(num_classes=1000).state_dict()
    initial = resnet18(num_classes=10).state_dict()
    matched = [k for k in initial if checkpoint[k].shape == initial[k].shape]
    return checkpoint, initial, matched


def test_merge_state_dict_docstring_example_runs() -> None:
    import doctest

    assert doctest.testmod(merge_module).failed == 0


def test_merge_state_dict_resnet18_loads_strict(
    resnet_merge: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]],
    model_index: ModelIndex,
    checkpoint_index: CheckpointIndexOf,
) -> None:
    checkpoint, initial, _ = resnet_merge
    target = resnet18(num_classes=10)
    result = compare(checkpoint_index(checkpoint), model_index(target))
    assert {m.key for m in result.shape_mismatched} == {"fc.weight", "fc.bias"}
    merged = merge_state_dict(initial, {k: checkpoint[k] for k in result.matched})
    assert list(merged) == list(initial)
    target.load_state_dict(merged, strict=True)
    for key in result.matched:
        assert torch.equal(merged[key], checkpoint[key]), key
    for key in ("fc.weight", "fc.bias"):
        assert torch.equal(merged[key], initial[key])


def test_merge_state_dict_model_policy_casts_to_model_dtype(
    model_index: ModelIndex, checkpoint_index: CheckpointIndexOf
) -> None:
    checkpoint = {k: v.half() for k, v in _small(2).state_dict().items()}
    target = _small(2)
    loaded = _loaded(checkpoint, target, model_index, checkpoint_index)
    merged = merge_state_dict(target.state_dict(), loaded, dtype_policy="model")
    assert merged["0.weight"].dtype == torch.float32
    assert torch.equal(merged["0.weight"], checkpoint["0.weight"].float())
    assert merged["1.num_batches_tracked"].dtype == torch.int64
    target.load_state_dict(merged, strict=True)


def test_merge_state_dict_checkpoint_policy_keeps_checkpoint_dtype(
    model_index: ModelIndex, checkpoint_index: CheckpointIndexOf
) -> None:
    checkpoint = {k: v.half() for k, v in _small(2).state_dict().items()}
    target = _small(2)
    loaded = _loaded(checkpoint, target, model_index, checkpoint_index)
    merged = merge_state_dict(target.state_dict(), loaded, dtype_policy="checkpoint")
    assert merged["0.weight"].dtype == torch.float16
    _assert_same({k: merged[k] for k in loaded}, loaded)
    target.load_state_dict(merged, strict=True)


def test_merge_state_dict_same_dtype_is_bit_identical() -> None:
    checkpoint = {"w": torch.tensor([float("nan"), -0.0, 1e-45])}
    merged = merge_state_dict({"w": torch.zeros(3)}, checkpoint)
    assert merged["w"].view(torch.int32).tolist() == checkpoint["w"].view(torch.int32).tolist()


def test_merge_state_dict_keeps_initial_for_unloaded_keys() -> None:
    initial = _small(3).state_dict()
    merged = merge_state_dict(initial, {})
    _assert_same(merged, initial)


def test_merge_state_dict_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="'extra' is not in the initial state_dict"):
        merge_state_dict({"w": torch.zeros(2)}, {"extra": torch.zeros(2)})


def test_merge_state_dict_rejects_other_shape() -> None:
    with pytest.raises(
        ValueError, match=r"'w' has shape \(3,\), the initial state_dict has \(2,\)"
    ):
        merge_state_dict({"w": torch.zeros(2)}, {"w": torch.zeros(3)})


def test_merge_state_dict_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="dtype_policy must be 'model' or 'checkpoint'"):
        merge_state_dict({}, {}, dtype_policy="fast")  # type: ignore[arg-type]
