"""Every way torch's weights_only unpickler makes a view of a storage is bounds-checked.

Issue 17, item 4: ``_rebuild_tensor_v3`` was missing from the scanner's list, so its views
escaped the geometry check and a merge copied bytes from past the storage. The list is
checked here against the rebuilders torch itself accepts, so a new torch cannot add one
silently; the indirect ways to the same views (``_rebuild_from_type_v2``, BUILD on a tensor,
arguments that are not a tuple) are refused as well.
"""

from __future__ import annotations

import collections
import inspect
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from app.errors import CorruptCheckpointError
from app.readers import open_tensors, read_checkpoint
from app.readers.guards.pickle_scan import KNOWN_REBUILDERS, STORAGE_REBUILDERS
from app.readers.guards.torch_file import guard_torch_file
from tests.security.payloads import (
    Built,
    Call,
    Storage,
    Tensor,
    float_storage,
    legacy_of,
    torch_zip,
    torch_zip_of,
)

_GEOMETRY = ("storage", "storage_offset", "size", "stride")


def _torch_rebuilders() -> dict[str, Callable[..., Any]]:
    """Every rebuild function torch's weights_only unpickler accepts, by dotted name."""
    from torch import _weights_only_unpickler as unpickler

    allowed = unpickler._get_allowed_globals()
    found = {
        name: fn
        for name, fn in allowed.items()
        if callable(fn) and not isinstance(fn, type) and "_rebuild" in name
    }
    for fn in getattr(unpickler, "_tensor_rebuild_functions", dict)():
        found[f"torch._utils.{fn.__name__}"] = fn
    return found


def test_scanner_knows_every_rebuilder_torch_accepts() -> None:
    rebuilders = _torch_rebuilders()
    assert len(rebuilders) >= 13  # the enumeration itself still works
    unknown = sorted(set(rebuilders) - KNOWN_REBUILDERS)
    assert not unknown, f"torch accepts rebuilders the pickle scan does not know: {unknown}"


def test_scanner_checks_every_rebuilder_that_views_a_storage() -> None:
    for name, fn in _torch_rebuilders().items():
        params = list(inspect.signature(fn).parameters)
        if "storage" not in params:
            assert name not in STORAGE_REBUILDERS, name
            continue
        assert name in STORAGE_REBUILDERS, name
        assert tuple(params[:4]) == _GEOMETRY, (name, params)
        dtype_at = params.index("dtype") if "dtype" in params else None
        assert STORAGE_REBUILDERS[name] == dtype_at, name


def _storage_for(name: str) -> Storage:
    if name.endswith("_qtensor"):
        return Storage("0", 4, bytes(4), storage_type=torch.QUInt8Storage)
    return float_storage("0", [1.0, 2.0, 3.0, 4.0])


def _arguments(name: str, storage: Storage, size: tuple[int, ...]) -> tuple[Any, ...]:
    """Arguments for a storage rebuilder, by parameter name (taught here once per name)."""
    by_name: dict[str, Any] = {
        "storage": storage,
        "storage_offset": 0,
        "size": size,
        "stride": (1,),
        "requires_grad": False,
        "backward_hooks": collections.OrderedDict(),
        "dtype": torch.float32,
        "quantizer_params": (torch.per_tensor_affine, 1.0, 0),
    }
    fn = _torch_rebuilders()[name]
    required = [p.name for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
    missing = [p for p in required if p not in by_name]
    assert not missing, f"teach this test the arguments {missing} of {name}"
    return tuple(by_name[p] for p in required)


def _write(tmp_path: Path, data: bytes, name: str = "m.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(STORAGE_REBUILDERS))
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_guard_refuses_a_view_past_its_storage_whatever_the_rebuilder(
    tmp_path: Path, name: str, fmt: str
) -> None:
    fn = _torch_rebuilders()[name]
    storage = _storage_for(name)
    obj = {"w": Call(fn, *_arguments(name, storage, (1000,)))}
    path = _write(tmp_path, torch_zip_of(obj) if fmt == "zip" else legacy_of(obj))
    with pytest.raises(CorruptCheckpointError, match="outside its storage"):
        guard_torch_file(path)


def test_rebuild_tensor_v3_past_its_storage_is_refused_by_the_readers(tmp_path: Path) -> None:
    v3 = torch._utils._rebuild_tensor_v3
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    od = collections.OrderedDict()
    cases = {
        "longer": Call(v3, storage, 0, (1000,), (1,), False, od, torch.float32),
        "wider-dtype": Call(v3, storage, 0, (4,), (1,), False, od, torch.float64),
        "offset": Call(v3, storage, 3, (2,), (1,), False, od, torch.float32),
    }
    for case, tensor in cases.items():
        path = _write(tmp_path, torch_zip_of({"w": tensor}), f"{case}.pt")
        # torch itself makes the view on meta, which is how the merge found its spans.
        assert torch.load(path, map_location="meta", weights_only=True)["w"].numel() > 0
        with pytest.raises(CorruptCheckpointError, match="outside its storage"):
            read_checkpoint(path)
        with pytest.raises(CorruptCheckpointError, match="outside its storage"), open_tensors(path):
            pass


def test_rebuild_tensor_v3_as_torch_save_writes_it_is_accepted(tmp_path: Path) -> None:
    base = torch.arange(8).to(torch.uint16)
    state = {
        "u16": base,
        "u16-view": base[2:6],
        "f8": torch.linspace(-1, 1, 6).to(torch.float8_e4m3fn),
        "u32": torch.arange(3).to(torch.uint32),
    }
    torch.save(state, tmp_path / "v3.pt")
    assert "torch._utils._rebuild_tensor_v3" in guard_torch_file(tmp_path / "v3.pt").pickle_globals
    with open_tensors(tmp_path / "v3.pt") as source:
        for key, value in state.items():
            assert torch.equal(source.read(key).view(torch.uint8), value.view(torch.uint8)), key


def _past_storage_by_indirection() -> dict[str, object]:
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    od = collections.OrderedDict()
    v2_args = (storage, 0, (1000,), (1,), False, od)
    from_type = torch._tensor._rebuild_from_type_v2
    v2, v3 = torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor_v3
    meta = (torch._utils._rebuild_meta_tensor_no_storage, (torch.float32, (1,), (1,), False))
    return {
        "from-type-v2": Call(from_type, v2, torch.Tensor, v2_args, {}),
        "from-type-nested": Call(
            from_type,
            from_type,
            torch.Tensor,
            (v3, torch.Tensor, (*v2_args, torch.float32), {}),
            {},
        ),
        "build-set-on-meta-tensor": Built(*meta, (storage, 0, (1000,), (1,))),
    }


@pytest.mark.parametrize("case", sorted(_past_storage_by_indirection()))
def test_views_made_indirectly_are_checked_too(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, torch_zip_of({"w": _past_storage_by_indirection()[case]}))
    assert torch.load(path, map_location="meta", weights_only=True)["w"].numel() == 1000
    with pytest.raises(CorruptCheckpointError, match="outside its storage"):
        guard_torch_file(path)


def _text(value: str) -> bytes:
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def _pid(key: str, numel: int) -> bytes:
    """BINPERSID of ("storage", torch.FloatStorage, key, "cpu", numel)."""
    storage_type = b"ctorch\nFloatStorage\n"
    return (
        b"("
        + _text("storage")
        + storage_type
        + _text(key)
        + _text("cpu")
        + b"K"
        + bytes([numel])
        + b"tQ"
    )


def _v2_with_list_args() -> bytes:
    # func(*args) accepts any iterable: a list of arguments hides them from a tuple reader.
    return (
        b"\x80\x02}"
        + _text("w")
        + b"ctorch._utils\n_rebuild_tensor_v2\n]("
        + _pid("0", 4)
        + b"K\x00M\xe8\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)Re"
        + b"Rs."
    )


def test_rebuilder_arguments_that_are_not_a_tuple_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, torch_zip(_v2_with_list_args(), [float_storage("0", [1.0] * 4)]))
    assert torch.load(path, map_location="meta", weights_only=True)["w"].numel() == 1000
    with pytest.raises(CorruptCheckpointError, match="malformed geometry"):
        guard_torch_file(path)


def test_storage_declared_with_a_cuda_type_is_sized_as_torch_sizes_it(tmp_path: Path) -> None:
    # torch.cuda.FloatStorage holds 4-byte elements: 4 of them need 16 bytes, not 4.
    storage = Storage("0", 4, bytes(4), storage_type=torch.cuda.FloatStorage)
    path = _write(tmp_path, torch_zip_of({"w": Tensor(storage, 0, (4,), (1,))}))
    with pytest.raises(CorruptCheckpointError, match="declares 16 bytes but its record holds 4"):
        guard_torch_file(path)


@pytest.mark.parametrize(
    "tensor",
    [
        Call(torch.Tensor, 262144),
        Call(torch.FloatTensor, 262144),
        Built(torch.Tensor, (), (Call(torch.UntypedStorage, 1 << 20), 0, (1 << 18,), (1,))),
    ],
    ids=["tensor-of-size", "float-tensor-of-size", "set-to-a-new-storage"],
)
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_tensors_of_uninitialized_memory_are_refused(
    tmp_path: Path, tensor: object, fmt: str
) -> None:
    # torch.Tensor(n) allocates without initializing: a merge would copy heap memory out.
    obj = {"w": tensor}
    path = _write(tmp_path, torch_zip_of(obj) if fmt == "zip" else legacy_of(obj))
    assert torch.load(path, map_location="cpu", weights_only=True)["w"].numel() == 262144
    with pytest.raises(CorruptCheckpointError, match="uninitialized memory"):
        guard_torch_file(path)
