"""Tests of app.merge.streaming: the streamed merge equals the naive merge on loaded keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import resnet18

from app import atomic
from app.errors import CorruptCheckpointError, InsufficientStorageError, UnmergeableTensorError
from app.merge.reference import merge_state_dict
from app.merge.streaming import stream_merge
from app.readers.checkpoint import open_tensors, read_checkpoint
from app.tensors import TensorIndex
from tests.full_disk import DevFullFiles


def _meta(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


def _matched(ckpt: TensorIndex, model: nn.Module) -> list[str]:
    """Model keys whose checkpoint tensor has the same key and shape (compare's rule)."""
    out = []
    for key, value in model.state_dict().items():
        info = ckpt.get(key)
        if info is not None and info.shape == tuple(value.shape):
            out.append(key)
    return out


def _naive(
    factory: Callable[[], nn.Module], path: Path, matched: list[str], policy: str
) -> dict[str, torch.Tensor]:
    """The foundation's recipe: a real build, every matched tensor loaded, then substituted."""
    from app.readers import load_tensors

    torch.manual_seed(0)
    initial = factory().state_dict()
    loaded = load_tensors(path, keys=matched, state_dict_path=read_checkpoint(path).state_dict_path)
    return merge_state_dict(initial, loaded, dtype_policy=policy)  # type: ignore[arg-type]


def _stream(
    factory: Callable[[], nn.Module],
    ckpt_path: Path,
    out: Path,
    *,
    policy: Literal["model", "checkpoint"] = "model",
    fmt: Literal["safetensors", "pt"] = "safetensors",
) -> tuple[Any, list[str]]:
    model = _meta(factory)
    ckpt = read_checkpoint(ckpt_path)
    matched = _matched(ckpt.index, model)
    with open_tensors(ckpt_path, state_dict_path=ckpt.state_dict_path) as source:
        result = stream_merge(
            model,
            source,
            out,
            key_map={k: k for k in matched},
            build_cpu=factory,
            dtype_policy=policy,
            format=fmt,
            metadata={"check_id": "x"},
        )
    return result, matched


def _assert_same_on_loaded(
    streamed: dict[str, torch.Tensor], naive: dict[str, torch.Tensor], matched: list[str]
) -> None:
    assert set(streamed) == set(naive)
    for key, value in naive.items():
        assert streamed[key].shape == value.shape, key
        assert streamed[key].dtype == value.dtype, key
    for key in matched:
        assert torch.equal(
            streamed[key].reshape(-1).view(torch.uint8),
            naive[key].contiguous().reshape(-1).view(torch.uint8),
        ), key


@pytest.mark.parametrize("fmt", ["zip", "safetensors"])
def test_stream_merge_resnet18_all_matching_is_bit_identical(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(1)
    state = resnet18().state_dict()
    ckpt_path = tmp_path / "r18.ckpt"
    if fmt == "zip":
        torch.save(state, ckpt_path)
    else:
        save_file(state, ckpt_path)
    result, matched = _stream(resnet18, ckpt_path, tmp_path / "out.safetensors")
    streamed = load_file(tmp_path / "out.safetensors")
    _assert_same_on_loaded(streamed, _naive(resnet18, ckpt_path, matched, "model"), matched)
    assert result.loaded_keys == len(matched) == len(state)
    assert result.kept_keys == 0
    assert result.notes == ()
    resnet18().load_state_dict(streamed, strict=True)


@pytest.mark.parametrize("fmt", ["zip", "safetensors"])
def test_stream_merge_resized_head_initialises_only_the_head(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(1)
    ckpt_path = tmp_path / "r18.ckpt"
    if fmt == "zip":
        torch.save({"state_dict": resnet18().state_dict()}, ckpt_path)
    else:
        save_file(resnet18().state_dict(), ckpt_path)

    def factory() -> nn.Module:
        return resnet18(num_classes=10)

    result, matched = _stream(factory, ckpt_path, tmp_path / "out.safetensors")
    streamed = load_file(tmp_path / "out.safetensors")
    naive = _naive(factory, ckpt_path, matched, "model")
    _assert_same_on_loaded(streamed, naive, matched)
    assert result.kept_keys == 2
    assert "reset_parameters() of their modules (fc)" in result.notes[0]
    assert streamed["fc.weight"].abs().sum() > 0
    assert not torch.isnan(streamed["fc.weight"]).any()
    factory().load_state_dict(streamed, strict=True)


def test_stream_merge_casts_like_the_naive_merge(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v
        for k, v in resnet18().state_dict().items()
    }
    ckpt_path = tmp_path / "r18.safetensors"
    save_file(state, ckpt_path)
    _, matched = _stream(resnet18, ckpt_path, tmp_path / "model.safetensors", policy="model")
    streamed = load_file(tmp_path / "model.safetensors")
    _assert_same_on_loaded(streamed, _naive(resnet18, ckpt_path, matched, "model"), matched)
    assert streamed["fc.weight"].dtype == torch.float32

    _, _ = _stream(resnet18, ckpt_path, tmp_path / "ckpt.safetensors", policy="checkpoint")
    kept = load_file(tmp_path / "ckpt.safetensors")
    _assert_same_on_loaded(kept, _naive(resnet18, ckpt_path, matched, "checkpoint"), matched)
    assert kept["fc.weight"].dtype == torch.bfloat16


class _Custom(nn.Module):
    """A module whose root parameter has no reset method: init needs a real build."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.full((4,), 3.0))
        self.fc = nn.Linear(4, 2)


def test_stream_merge_falls_back_to_a_real_build_with_a_note(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ckpt_path = tmp_path / "c.pt"
    torch.save({"fc.weight": torch.randn(2, 4), "fc.bias": torch.randn(2)}, ckpt_path)
    result, matched = _stream(_Custom, ckpt_path, tmp_path / "out.safetensors")
    streamed = load_file(tmp_path / "out.safetensors")
    assert matched == ["fc.weight", "fc.bias"]
    assert torch.equal(streamed["token"], torch.full((4,), 3.0))
    assert "whole model was built on the CPU" in result.notes[0]
    assert "<root>" in result.notes[0]
    _assert_same_on_loaded(streamed, _naive(_Custom, ckpt_path, matched, "model"), matched)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_stream_merge_writes_tied_keys_from_the_loaded_tensor(tmp_path: Path) -> None:
    ckpt_path = tmp_path / "t.safetensors"
    save_file({"embed.weight": torch.randn(10, 4)}, ckpt_path)
    result, matched = _stream(_Tied, ckpt_path, tmp_path / "out.safetensors")
    streamed = load_file(tmp_path / "out.safetensors")
    assert matched == ["embed.weight"]
    assert torch.equal(streamed["head.weight"], streamed["embed.weight"])
    assert "tied to a loaded tensor" in result.notes[0]
    assert (result.loaded_keys, result.kept_keys) == (1, 1)


def test_stream_merge_legacy_and_pt_output(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ckpt_path = tmp_path / "legacy.pth"
    torch.save(resnet18().state_dict(), ckpt_path, _use_new_zipfile_serialization=False)
    result, matched = _stream(resnet18, ckpt_path, tmp_path / "out.pt", fmt="pt")
    streamed = torch.load(tmp_path / "out.pt", weights_only=True)
    _assert_same_on_loaded(streamed, _naive(resnet18, ckpt_path, matched, "model"), matched)
    assert "not streamed" in result.notes[-1]


def test_stream_merge_header_holds_metadata_and_every_key(tmp_path: Path) -> None:
    ckpt_path = tmp_path / "r18.safetensors"
    save_file(resnet18().state_dict(), ckpt_path)
    result, _ = _stream(resnet18, ckpt_path, tmp_path / "out.safetensors")
    with safe_open(tmp_path / "out.safetensors", framework="pt") as f:
        assert f.metadata() == {"check_id": "x"}
        assert set(f.keys()) == set(resnet18().state_dict())
    assert result.size_bytes == (tmp_path / "out.safetensors").stat().st_size
    assert not list(tmp_path.glob(".out*"))


def test_stream_merge_refuses_unknown_matched_keys(tmp_path: Path) -> None:
    ckpt_path = tmp_path / "r18.safetensors"
    save_file({"x": torch.zeros(1)}, ckpt_path)
    with (
        open_tensors(ckpt_path) as source,
        pytest.raises(ValueError, match="key_map keys are not model keys"),
    ):
        stream_merge(
            _meta(resnet18),
            source,
            tmp_path / "o.safetensors",
            key_map={"x": "x"},
            build_cpu=resnet18,
        )


def test_stream_merge_loads_renamed_keys_through_the_key_map(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = resnet18().state_dict()
    ckpt_path = tmp_path / "wrapped.safetensors"
    save_file({f"module.{k}": v for k, v in state.items()}, ckpt_path)
    with open_tensors(ckpt_path) as source:
        result = stream_merge(
            _meta(resnet18),
            source,
            tmp_path / "out.safetensors",
            key_map={k: f"module.{k}" for k in state},
            build_cpu=resnet18,
        )
    streamed = load_file(tmp_path / "out.safetensors")
    assert result.loaded_keys == len(state)
    for key, value in state.items():
        assert torch.equal(streamed[key], value), key


def test_stream_merge_copies_an_unchanged_data_section_block_aligned(
    tmp_path: Path,
) -> None:
    ckpt_path = tmp_path / "r18.safetensors"
    save_file(resnet18().state_dict(), ckpt_path)
    _stream(resnet18, ckpt_path, tmp_path / "out.safetensors")
    source, out = ckpt_path.read_bytes(), (tmp_path / "out.safetensors").read_bytes()
    source_start = 8 + int.from_bytes(source[:8], "little")
    out_start = 8 + int.from_bytes(out[:8], "little")
    assert out[out_start:] == source[source_start:]
    assert out_start % 4096 == source_start % 4096
    assert out_start // 4096 % 16 == 0  # in the first page of a 64 KiB block


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


def _head_merge(
    tmp_path: Path,
    bias: torch.Tensor,
    *,
    policy: Literal["model", "checkpoint"] = "model",
    fmt: Literal["safetensors", "pt"] = "safetensors",
) -> Path:
    ckpt_path = tmp_path / "c.pt"
    torch.save({"fc.weight": torch.zeros(2, 4), "fc.bias": bias}, ckpt_path)
    out = tmp_path / f"out.{fmt}"
    with open_tensors(ckpt_path) as source:
        stream_merge(
            _meta(_Head),
            source,
            out,
            key_map={"fc.weight": "fc.weight", "fc.bias": "fc.bias"},
            build_cpu=_Head,
            dtype_policy=policy,
            format=fmt,
        )
    return out


_ODD_DTYPES = ["complex32", "float8_e4m3fnuz", "float8_e5m2fnuz", "bits8", "bits16"]
# (dtype, policy, format) -> the dtype written, or None for an unmergeable-tensor problem.
_WRITTEN = {
    **{(d, "model", f): "float32" for d in ("float8_e4m3fnuz", "float8_e5m2fnuz") for f in "sp"},
    **{(d, "checkpoint", "p"): d for d in _ODD_DTYPES},
}


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("policy", ["model", "checkpoint"])
@pytest.mark.parametrize("dtype", _ODD_DTYPES)
def test_stream_merge_odd_dtypes_are_written_and_verified_or_refused(
    tmp_path: Path, dtype: str, policy: Literal["model", "checkpoint"], fmt: Any
) -> None:
    bias = torch.zeros(2 * getattr(torch, dtype).itemsize, dtype=torch.uint8)
    bias = bias.view(getattr(torch, dtype))
    written = _WRITTEN.get((dtype, policy, fmt[0]))
    if written is None:
        with pytest.raises(UnmergeableTensorError, match=f"'fc.bias' .*{dtype}"):
            _head_merge(tmp_path, bias, policy=policy, fmt=fmt)
        assert not list(tmp_path.glob("*out*"))
        return
    out = _head_merge(tmp_path, bias, policy=policy, fmt=fmt)
    state = load_file(out) if fmt == "safetensors" else torch.load(out, weights_only=True)
    assert str(state["fc.bias"].dtype) == f"torch.{written}"
    assert torch.equal(state["fc.weight"], torch.zeros(2, 4))


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr", "meta"])
def test_stream_merge_sparse_and_meta_tensors_are_refused(
    tmp_path: Path, layout: str, legacy: bool
) -> None:
    dense = torch.zeros(2, 4)
    weight = {
        "sparse_coo": dense.to_sparse(),
        "sparse_csr": dense.to_sparse_csr(),
        "meta": dense.to("meta"),
    }[layout]
    ckpt_path = tmp_path / "c.pt"
    torch.save(
        {"fc.weight": weight, "fc.bias": torch.zeros(2)},
        ckpt_path,
        _use_new_zipfile_serialization=not legacy,
    )
    expected = CorruptCheckpointError if layout == "meta" and not legacy else UnmergeableTensorError
    with (
        pytest.raises(expected, match="fc.weight" if layout != "meta" or legacy else "offsets"),
        open_tensors(ckpt_path) as source,
    ):
        stream_merge(
            _meta(_Head),
            source,
            tmp_path / "out.safetensors",
            key_map={"fc.weight": "fc.weight", "fc.bias": "fc.bias"},
            build_cpu=_Head,
        )
    assert not list(tmp_path.glob("*out*"))


def _f4_checkpoint(path: Path) -> None:
    """fc.bias as safetensors F4: 2 values in 1 byte (torch's float4_e2m1fn_x2 is 2 bytes)."""
    header = {
        "fc.bias": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]},
        "fc.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [1, 33]},
    }
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 33)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("policy", ["model", "checkpoint"])
def test_stream_merge_safetensors_f4_is_refused_not_written_broken(
    tmp_path: Path, policy: Literal["model", "checkpoint"], fmt: Any
) -> None:
    ckpt_path = tmp_path / "f4.safetensors"
    _f4_checkpoint(ckpt_path)
    with (
        open_tensors(ckpt_path) as source,
        pytest.raises(UnmergeableTensorError, match=r"'fc\.bias' is stored packed"),
    ):
        stream_merge(
            _meta(_Head),
            source,
            tmp_path / f"out.{fmt}",
            key_map={"fc.weight": "fc.weight", "fc.bias": "fc.bias"},
            build_cpu=_Head,
            dtype_policy=policy,
            format=fmt,
        )
    assert not list(tmp_path.glob("*out*"))


def test_stream_merge_disk_full_is_insufficient_storage_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt_path = tmp_path / "r18.safetensors"
    save_file(resnet18().state_dict(), ckpt_path)
    monkeypatch.setattr(atomic, "os", DevFullFiles())
    with pytest.raises(InsufficientStorageError, match="ran out of disk space"):
        _stream(resnet18, ckpt_path, tmp_path / "out.safetensors")
    assert not list(tmp_path.glob("*out*"))
