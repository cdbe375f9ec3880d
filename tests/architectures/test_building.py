"""Tests of building models on the meta device and on CPU."""

from __future__ import annotations

import pytest
import torch

from app.architectures import QualifiedName, build_model, describe
from app.architectures.building import build_model_with_notes, short_message
from app.errors import ArchitectureArgumentsError, ArchitectureBuildError

RESNET18 = QualifiedName("torchvision", "resnet18")


def test_build_model_meta_allocates_no_memory() -> None:
    model = build_model(RESNET18, {})
    assert all(p.is_meta for p in model.parameters())
    assert all(b.is_meta for b in model.buffers())


def test_build_model_cpu_is_reproducible_for_a_seed() -> None:
    first = build_model(RESNET18, {"num_classes": 3}, device="cpu", seed=1)
    second = build_model(RESNET18, {"num_classes": 3}, device="cpu", seed=1)
    other = build_model(RESNET18, {"num_classes": 3}, device="cpu", seed=2)
    weights = [m.get_parameter("fc.weight") for m in (first, second, other)]
    assert not weights[0].is_meta
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_build_model_cpu_restores_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(RESNET18, {}, device="cpu", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_build_model_bad_kwarg_on_cpu_is_an_arguments_error() -> None:
    with pytest.raises(ArchitectureArgumentsError, match="unexpected keyword argument 'widht'"):
        build_model(RESNET18, {"widht": 2}, device="cpu")


def test_build_model_other_failure_is_a_build_error() -> None:
    with pytest.raises(ArchitectureBuildError, match="negative dimension"):
        build_model(RESNET18, {"num_classes": -1})


@pytest.mark.parametrize("key", ["weights", "weights_backbone", "pretrained"])
def test_build_model_torchvision_refuses_weights(key: str) -> None:
    with pytest.raises(ArchitectureArgumentsError, match="never downloads weights"):
        build_model(RESNET18, {key: "DEFAULT"})


def test_build_model_torchvision_accepts_null_weights() -> None:
    model = build_model(RESNET18, {"weights": None, "pretrained": False})
    assert isinstance(model, torch.nn.Module)


def test_build_model_meta_failure_builds_large_tensors_on_meta_with_a_note() -> None:
    # regnet computes its widths with tensor ops that cannot run on meta.
    model, notes = build_model_with_notes(QualifiedName("torchvision", "regnet_x_400mf"), {})
    assert all(p.is_meta for p in model.parameters())
    assert len(notes) == 1
    assert "only its large tensors on the meta device" in notes[0]


def test_build_model_fallback_never_allocates_a_caller_sized_head() -> None:
    """A 40-billion-parameter head (num_classes=10**8) would need 160 GB on the CPU."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_model(QualifiedName("torchvision", "regnet_x_400mf"), {"num_classes": 10**8})
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert model.fc.weight.shape == (10**8, 400) and model.fc.weight.is_meta
    assert grown_kib < 200 * 1024


def test_large_on_meta_keeps_small_tensors_and_arithmetic_on_the_cpu() -> None:
    from app.architectures.large_on_meta import SMALL_NUMEL, LargeOnMeta

    with LargeOnMeta():
        small = torch.zeros(SMALL_NUMEL)
        large = torch.empty(SMALL_NUMEL + 1)
        shaped = torch.ones((64, 65))
        full = torch.full((100, 100), 2.0)
        widths = torch.arange(4).tolist()
    assert not small.is_meta and large.is_meta and shaped.is_meta and full.is_meta
    assert widths == [0, 1, 2, 3]


def test_describe_carries_the_fallback_note() -> None:
    arch = describe("torchvision:regnet_x_400mf", {"num_classes": 4})
    assert arch.index.tensors["fc.weight"].shape == (4, 400)
    assert any("meta device" in note for note in arch.notes)


def test_describe_fasterrcnn_builds_without_download() -> None:
    arch = describe("torchvision:fasterrcnn_resnet50_fpn", {"num_classes": 3})
    assert arch.index.keys()[0].startswith("backbone.body.")
    assert arch.index.tensors["roi_heads.box_predictor.cls_score.weight"].shape == (3, 1024)


def test_describe_quantized_model_notes_non_tensor_entries() -> None:
    arch = describe("torchvision:quantized_resnet18", {"quantize": True})
    assert any("not tensors" in note for note in arch.notes)


def test_short_message_strips_paths_and_truncates() -> None:
    err = ValueError("bad file /home/user/.cache/torch/x.pth here\nsecond line")
    assert short_message(err) == "bad file x.pth here"
    assert len(short_message(ValueError("x" * 1000))) == 300


def test_build_warnings_become_notes() -> None:
    """What a library warns while building reaches the report's notes, not only stderr."""
    import warnings

    from app.architectures.building import MAX_WARNING_NOTES, warning_notes

    caught = [
        warnings.WarningMessage(UserWarning(f"deprecated argument {i}"), UserWarning, "m.py", 1)
        for i in range(MAX_WARNING_NOTES + 2)
    ]
    caught.append(caught[0])  # the same message twice is one note
    notes = warning_notes(RESNET18, caught)
    assert notes[0] == "Building torchvision:resnet18 warned (UserWarning): deprecated argument 0"
    assert len(notes) == MAX_WARNING_NOTES + 1 and notes[-1] == "... and 2 more."
    # timm maps a deprecated name to the current one, and says so with a warning.
    _model, built = build_model_with_notes(QualifiedName("timm", "tf_efficientnet_b0_ns"), {})
    assert built == (
        "Building timm:tf_efficientnet_b0_ns warned (UserWarning): Mapping deprecated model "
        "name tf_efficientnet_b0_ns to current tf_efficientnet_b0.ns_jft_in1k.",
    )
    assert build_model_with_notes(RESNET18, {})[1] == ()
