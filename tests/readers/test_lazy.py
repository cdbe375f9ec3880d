"""Tests of app.readers.lazy: header-only reads give the full read's report; spans are exact."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models import resnet18

from app.architectures import describe
from app.errors import CorruptCheckpointError
from app.matching.analysis import MatchOptions, analyse
from app.matching.report import build_report
from app.readers import open_tensors, read_checkpoint
from app.readers.lazy import read_span
from app.readers.state_dict import find_state_dict, index_tensors
from app.tensors import CheckpointIndex, Safety
from tests.security.payloads import (
    Call,
    Entry,
    Storage,
    Tensor,
    dumps_with_storages,
    float_storage,
    raw_zip,
    torch_zip_of,
)

from .helpers import tiny_state_dict


def _report(checkpoint: CheckpointIndex) -> dict[str, object]:
    architecture = describe("torchvision:resnet18", {"num_classes": 10})
    return build_report(
        check_id="0" * 32,
        filename="r18",
        sha256="0" * 64,
        size_bytes=1,
        analysis=analyse(checkpoint, architecture, MatchOptions()),
        architecture=architecture,
    )


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_lazy_read_gives_the_same_report_as_the_full_read(tmp_path: Path, fmt: str) -> None:
    state = {
        k: v.to(torch.float16) if k.startswith("layer1") else v
        for k, v in resnet18().state_dict().items()
    }
    path = tmp_path / "r18"
    if fmt == "safetensors":
        save_file(state, path)
        full_tensors = load_file(path)
    else:
        torch.save({"model": state, "epoch": 3}, path, _use_new_zipfile_serialization=fmt == "zip")
        full_tensors = find_state_dict(torch.load(path, weights_only=True)).tensors
    lazy = read_checkpoint(path)
    full = CheckpointIndex(
        format=lazy.format,
        index=index_tensors(full_tensors),
        state_dict_path=lazy.state_dict_path,
        candidates=lazy.candidates,
        notes=lazy.notes,
    )
    assert _report(lazy) == _report(full)


def test_lazy_zip_spans_read_views_and_shared_storages(tmp_path: Path) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    state = {"base": base, "row": base[1], "col": base[:, 2], "t": base.t(), **tiny_state_dict()}
    torch.save(state, tmp_path / "v.pt")
    with open_tensors(tmp_path / "v.pt") as source:
        assert source.keys() == list(state)
        for key, value in state.items():
            assert torch.equal(source.read(key), value), key
        assert source.span("base").contiguous  # type: ignore[union-attr]
        assert not source.span("col").contiguous  # type: ignore[union-attr]


def test_lazy_safetensors_spans_match_the_header(tmp_path: Path) -> None:
    state = tiny_state_dict()
    save_file(state, tmp_path / "t.safetensors")
    with open_tensors(tmp_path / "t.safetensors") as source:
        for key, value in state.items():
            span = source.span(key)
            assert span is not None and span.nbytes == value.numel() * value.element_size()
            assert torch.equal(read_span(span), value), key


def test_lazy_legacy_files_are_read_in_memory(tmp_path: Path) -> None:
    state = tiny_state_dict()
    torch.save(state, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    with open_tensors(tmp_path / "l.pt") as source:
        assert source.span("conv.weight") is None
        assert torch.equal(source.read("conv.weight"), state["conv.weight"])


def test_lazy_unknown_key_is_a_key_error(tmp_path: Path) -> None:
    save_file(tiny_state_dict(), tmp_path / "t.safetensors")
    with (
        open_tensors(tmp_path / "t.safetensors") as source,
        pytest.raises(KeyError, match="not in the state_dict"),
    ):
        source.read("nope")


def test_lazy_truncated_span_is_corrupt(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(1000)}, tmp_path / "t.safetensors")
    with open_tensors(tmp_path / "t.safetensors") as source:  # spans are read while it is open
        span = source.span("w")
        assert span is not None
        with (tmp_path / "t.safetensors").open("r+b") as f:
            f.truncate(span.offset + 10)
        with pytest.raises(CorruptCheckpointError, match="ends inside a tensor"):
            read_span(span)


def test_lazy_legacy_report_says_the_file_was_read_whole(tmp_path: Path) -> None:
    torch.save(tiny_state_dict(), tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    torch.save(tiny_state_dict(), tmp_path / "z.pt")
    assert "cannot be read lazily" in read_checkpoint(tmp_path / "l.pt").notes[-1]
    assert not any("lazily" in n for n in read_checkpoint(tmp_path / "z.pt").notes)


def _guard_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a hostile file past the guard's scan, to test the last check before bytes are read."""
    from app.readers import torch_pickle

    monkeypatch.setattr(torch_pickle, "guard_torch_file", lambda path: Safety("torch_zip", True))


@pytest.mark.parametrize(
    ("size", "stride"), [((5,), (1,)), ((2, 2), (1, 3))], ids=["contiguous", "strided"]
)
def test_lazy_zip_spans_stay_inside_the_record_of_their_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, ...], stride: tuple[int, ...]
) -> None:
    v3 = torch._utils._rebuild_tensor_v3
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    tensor = Call(v3, storage, 0, size, stride, False, OrderedDict(), torch.float32)
    (tmp_path / "v.pt").write_bytes(torch_zip_of({"w": tensor}))
    _guard_skipped(monkeypatch)
    with (
        pytest.raises(CorruptCheckpointError, match="outside the record of its storage"),
        open_tensors(tmp_path / "v.pt"),
    ):
        pass


def test_lazy_zip_spans_start_where_a_storage_record_starts(tmp_path: Path) -> None:
    # With a .format_version record, torch computes offsets on meta instead of looking
    # them up: storage "0" declared smaller than its record puts "1" inside "0".
    first, second = Storage("0", 1, bytes(range(16))), float_storage("1", [1.0, 2.0, 3.0, 4.0])
    pkl, _ = dumps_with_storages(
        {"a": Tensor(first, 0, (1,), (1,)), "b": Tensor(second, 0, (4,), (1,))}
    )
    records = [("data.pkl", pkl), (".format_version", b"1"), ("byteorder", b"little")]
    records += [("data/0", first.data), ("data/1", second.data), ("version", b"3\n")]
    (tmp_path / "f.pt").write_bytes(raw_zip([Entry(f"archive/{n}", d) for n, d in records]))
    assert read_checkpoint(tmp_path / "f.pt").index.tensors["b"].shape == (4,)
    with (
        pytest.raises(CorruptCheckpointError, match="storage offsets"),
        open_tensors(tmp_path / "f.pt"),
    ):
        pass
