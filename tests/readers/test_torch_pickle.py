"""Tests for torch.save checkpoints: weights_only loading and the error mapping."""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from app.errors import (
    CorruptCheckpointError,
    LimitExceededError,
    NoTensorsError,
    StateDictKeyError,
    UnsafeCheckpointError,
)
from app.readers import open_tensors, read_checkpoint
from tests.security.payloads import Entry, raw_zip, torch_entries

from .helpers import Saver, tiny_state_dict


class _Evil:
    """Pickles as a call to os.system that would create a canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.canary}",))


def test_read_checkpoint_torch_keys_shapes_dtypes(save_torch: Saver) -> None:
    ckpt = read_checkpoint(save_torch(tiny_state_dict(), "model.bin"))
    assert ckpt.format in ("torch_zip", "torch_legacy")
    assert [(i.key, i.shape, i.dtype) for i in ckpt.index] == [
        ("conv.weight", (4, 3, 3, 3), "float32"),
        ("conv.bias", (4,), "float32"),
        ("fc.weight", (2, 4), "float16"),
        ("fc.bias", (2,), "bfloat16"),
        ("bn.num_batches_tracked", (), "int64"),
    ]
    assert ckpt.state_dict_path == ""


def test_read_checkpoint_format_names(save_zip: Saver, save_legacy: Saver) -> None:
    assert read_checkpoint(save_zip(tiny_state_dict(), "a")).format == "torch_zip"
    assert read_checkpoint(save_legacy(tiny_state_dict(), "b")).format == "torch_legacy"


@pytest.mark.parametrize(
    ("wrapped", "path"),
    [
        ({"epoch": 3, "state_dict": tiny_state_dict()}, "state_dict"),
        ({"model": tiny_state_dict(), "optimizer": {"m": torch.zeros(1)}}, "model"),
        ({"checkpoint": {"model": OrderedDict(tiny_state_dict())}}, "checkpoint.model"),
        ({"state_dict": tiny_state_dict(), "state_dict_ema": tiny_state_dict()}, "state_dict_ema"),
    ],
)
def test_read_checkpoint_torch_unwraps(save_torch: Saver, wrapped: object, path: str) -> None:
    ckpt = read_checkpoint(save_torch(wrapped, "wrapped.pth"))
    assert ckpt.state_dict_path == path
    assert ckpt.index.keys() == list(tiny_state_dict())
    assert f"Used the state_dict at {path!r}" in " ".join(ckpt.notes)


def test_read_checkpoint_torch_ema_candidates(save_torch: Saver) -> None:
    obj = {"state_dict": tiny_state_dict(), "state_dict_ema": tiny_state_dict()}
    ckpt = read_checkpoint(save_torch(obj, "ema.pt"))
    assert [c.path for c in ckpt.candidates] == ["state_dict", "state_dict_ema"]


def test_read_checkpoint_torch_explicit_key(save_torch: Saver) -> None:
    obj = {"state_dict": tiny_state_dict(), "state_dict_ema": {"w": torch.zeros(1)}}
    ckpt = read_checkpoint(save_torch(obj, "ema.pt"), state_dict_key="state_dict")
    assert ckpt.state_dict_path == "state_dict"
    assert len(ckpt.index) == 5


def test_read_checkpoint_torch_missing_key(save_torch: Saver) -> None:
    path = save_torch({"model": tiny_state_dict()}, "m.pt")
    with pytest.raises(StateDictKeyError, match=r"'net'.*Candidates: 'model'"):
        read_checkpoint(path, state_dict_key="net")


def test_read_checkpoint_pickled_module_is_unsafe(save_torch: Saver) -> None:
    path = save_torch(torch.nn.Sequential(torch.nn.Linear(2, 2)), "module.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"pickled nn\.Module.*model\.state_dict\(\)"):
        read_checkpoint(path)


def test_read_checkpoint_unsafe_detail_has_globals_but_no_path(save_zip: Saver) -> None:
    path = save_zip(torch.nn.Linear(2, 2), "secret-dir-module.pt")
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    assert "torch.nn.modules.linear.Linear" in info.value.extensions["globals"]
    assert str(path) not in info.value.detail
    assert "\x1b" not in info.value.detail
    assert info.value.status == 422


def test_read_checkpoint_malicious_reduce_never_runs(save_torch: Saver, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = save_torch({"w": torch.zeros(1), "x": _Evil(canary)}, "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"safe loading refuses \(posix\.system\)"):
        read_checkpoint(path)
    assert not canary.exists()


def test_read_checkpoint_damaged_zip_payload_is_corrupt(save_zip: Saver) -> None:
    path = save_zip(tiny_state_dict(), "m.pt")
    data = bytearray(path.read_bytes())
    start = data.index(b"data.pkl") + 40  # inside the pickle record
    data[start : start + 60] = b"\xff" * 60
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="could not be read") as info:
        read_checkpoint(path)
    assert str(path) not in info.value.detail


def test_read_checkpoint_truncated_zip_is_corrupt(save_zip: Saver) -> None:
    path = save_zip(tiny_state_dict(), "m.pt")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        read_checkpoint(path)


def test_read_checkpoint_truncated_legacy_is_corrupt(save_legacy: Saver) -> None:
    path = save_legacy(tiny_state_dict(), "m.pt")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(CorruptCheckpointError, match="could not be read"):
        read_checkpoint(path)


def test_read_checkpoint_no_tensors(save_torch: Saver) -> None:
    path = save_torch({"epoch": 3, "best_acc": 0.9}, "empty.pt")
    with pytest.raises(NoTensorsError, match=r"'epoch' \(int\), 'best_acc' \(float\)"):
        read_checkpoint(path)


def test_read_checkpoint_single_tensor(save_torch: Saver) -> None:
    path = save_torch(torch.zeros(3), "tensor.pt")
    with pytest.raises(NoTensorsError, match="single tensor"):
        read_checkpoint(path)


def test_read_checkpoint_torch_max_tensors(save_torch: Saver) -> None:
    path = save_torch(tiny_state_dict(), "m.pt")
    with pytest.raises(LimitExceededError, match=r"holds 5 tensors.*max_tensors=4") as info:
        read_checkpoint(path, max_tensors=4)
    assert info.value.extensions == {"limit": "max_tensors", "limit_value": 4}


def test_read_checkpoint_big_endian_zip_is_read_on_the_cpu(tmp_path: Path) -> None:
    # torch 2.14 byteswaps meta storages of an other-endian zip and dies of SIGSEGV.
    entries = torch_entries()
    entries[1] = Entry("archive/byteorder", b"big")
    path = tmp_path / "big.pt"
    path.write_bytes(raw_zip(entries))
    expected = torch.load(path, weights_only=True)["w"]
    assert read_checkpoint(path).index.tensors["w"].shape == (4,)
    with open_tensors(path) as source:
        assert source.span("w") is None
        assert torch.equal(source.read("w"), expected)


def _imagenet_checkpoint() -> dict[str, object]:
    """pytorch/examples imagenet/main.py's save_checkpoint dict, best_acc1 a numpy scalar."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return {
        "epoch": 90,
        "arch": "resnet18",
        "state_dict": model.state_dict(),
        "best_acc1": np.float64(69.76),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"step_size": 30, "gamma": 0.1, "last_epoch": 90},
    }


def _dino_checkpoint() -> dict[str, object]:
    """DINO main_dino.py's save_dict: student, teacher, optimizer, epoch, args (Namespace)."""
    torch.manual_seed(0)
    student, teacher = torchvision.models.resnet18(), torchvision.models.resnet18()
    optimizer = torch.optim.AdamW(student.parameters())
    args = argparse.Namespace(
        arch="resnet18",
        patch_size=16,
        out_dim=65536,
        norm_last_layer=True,
        lr=0.0005,
        output_dir=".",
        seed=0,
        data_path="/path/to/imagenet/train/",
        local_crops_scale=(0.05, 0.4),
    )
    return {
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 100,
        "args": args,
        "dino_loss": {"center": torch.zeros(1, 65536)},
    }


@pytest.mark.parametrize(
    ("build", "allowed", "path"),
    [
        (_imagenet_checkpoint, ("numpy._core.multiarray.scalar", "numpy.dtype"), "state_dict"),
        (_dino_checkpoint, ("argparse.Namespace",), "teacher"),
    ],
    ids=["imagenet-best-acc1-numpy", "dino-args-namespace"],
)
def test_read_checkpoint_training_script_extras_are_allowlisted(
    save_torch: Saver, build: Callable[[], dict[str, object]], allowed: tuple[str, ...], path: str
) -> None:
    saved = build()
    file = save_torch(saved, "checkpoint.pth")
    ckpt = read_checkpoint(file)
    assert ckpt.state_dict_path == path
    assert ckpt.safety is not None
    assert ckpt.safety.allowed_globals == allowed
    assert not ckpt.safety.refused_globals
    expected = saved[path]
    assert isinstance(expected, dict)
    with open_tensors(file, state_dict_path=path) as source:  # the merge's path
        assert torch.equal(source.read("fc.weight"), expected["fc.weight"])


def test_read_checkpoint_numpy_scalar_in_protocol_4(tmp_path: Path) -> None:
    path = tmp_path / "p4.pth"
    torch.save(_imagenet_checkpoint(), path, pickle_protocol=4)
    ckpt = read_checkpoint(path)
    assert ckpt.safety is not None and ckpt.safety.allowed_globals
    assert ckpt.state_dict_path == "state_dict"
