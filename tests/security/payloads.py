"""Hostile files built in the test: pickles that would run code, forged archives and headers.

Each code-running payload, if it ever ran, would create its canary file; the tests assert
the canary never appears. ``live_payloads`` proves the payloads are real: plain
``pickle.loads`` in a subprocess does create the canary.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


class Call:
    """Pickles as ``fn(*args)`` (REDUCE); callable so that calls can nest."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self) -> None:  # pragma: no cover - only pickle checks callability
        raise AssertionError


def touch(canary: str) -> str:
    return f"touch {canary}"


def _protocol_payload(canary: str, protocol: int) -> bytes:
    # os.system pickles as posix.system: GLOBAL up to protocol 3, STACK_GLOBAL from 4.
    return pickle.dumps({"w": Call(os.system, touch(canary))}, protocol=protocol)


def _op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _inst(canary: str) -> bytes:
    return b"(" + _op_str(touch(canary)) + b"ios\nsystem\n."


def _obj(canary: str) -> bytes:
    return b"\x80\x02(cos\nsystem\n" + _op_str(touch(canary)) + b"o."


def _build_setstate(canary: str) -> bytes:
    # NEWOBJ makes a namespace; BUILD puts os.system as its __setstate__; BUILD calls it.
    return (
        b"\x80\x02ctypes\nSimpleNamespace\n)\x81}"
        + _op_str("__setstate__")
        + b"cos\nsystem\ns"
        + b"b"
        + _op_str(touch(canary))
        + b"b."
    )


def _build_setstate_namespace(canary: str) -> bytes:
    # The same trick on argparse.Namespace, which the service allowlists.
    return _build_setstate(canary).replace(b"ctypes\nSimpleNamespace\n", b"cargparse\nNamespace\n")


def _getattr_chain(canary: str) -> bytes:
    system = Call(getattr, Call(builtins.__import__, "os"), "system")
    return pickle.dumps({"w": Call(system, touch(canary))}, protocol=2)


def _eval(canary: str) -> bytes:
    return pickle.dumps(Call(eval, f"__import__('os').system({touch(canary)!r})"), protocol=2)


def _exec(canary: str) -> bytes:
    return pickle.dumps(Call(exec, f"open({canary!r}, 'w').close()"), protocol=2)


def _subprocess(canary: str) -> bytes:
    return pickle.dumps(Call(subprocess.call, ["touch", canary]), protocol=2)


def _stack_global_memo(canary: str) -> bytes:
    # STACK_GLOBAL whose module and name come from the memo, not from inline strings.
    return (
        b"\x80\x04"
        + b"\x8c\x05posix\x94"
        + b"\x8c\x06system\x94"
        + b"h\x00h\x01\x93"
        + b"\x8c"
        + bytes([len(touch(canary))])
        + touch(canary).encode()
        + b"\x85R."
    )


CODE_PAYLOADS: dict[str, Callable[[str], bytes]] = {
    **{
        f"reduce-posix-system-protocol-{p}": (lambda c, p=p: _protocol_payload(c, p))
        for p in range(6)
    },
    "inst-os-system": _inst,
    "obj-os-system": _obj,
    "newobj-build-setstate": _build_setstate,
    "newobj-build-setstate-namespace": _build_setstate_namespace,
    "builtins-getattr-chain": _getattr_chain,
    "reduce-eval": _eval,
    "reduce-exec": _exec,
    "reduce-subprocess-call": _subprocess,
    "stack-global-from-memo": _stack_global_memo,
}


def live_payloads() -> dict[str, Callable[[str], bytes]]:
    """The payloads that plain pickle.loads would run (all of them)."""
    return CODE_PAYLOADS


# ---------------------------------------------------------------- torch containers


@dataclass
class Storage:
    """A storage to persist: its key, declared element count, location and raw bytes."""

    key: str
    numel: int
    data: bytes
    location: str = "cpu"
    storage_type: Any = None


class Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2 over a Storage, with any geometry."""

    def __init__(
        self, storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return torch._utils._rebuild_tensor_v2, (
            self.storage,
            self.offset,
            self.size,
            self.stride,
            False,
            collections.OrderedDict(),
        )


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            kind = obj.storage_type or torch.FloatStorage
            return ("storage", kind, obj.key, obj.location, obj.numel)
        return None


def float_storage(key: str, values: list[float], **kwargs: Any) -> Storage:
    return Storage(key, len(values), struct.pack(f"<{len(values)}f", *values), **kwargs)


def dumps_with_storages(obj: Any, protocol: int = 2) -> tuple[bytes, list[Storage]]:
    """Pickle ``obj`` as torch.save does, collecting the storages it references."""
    found: list[Storage] = []

    class Collecting(_Pickler):
        def persistent_id(self, o: Any) -> Any:
            pid = super().persistent_id(o)
            if pid is not None and all(s is not o for s in found):
                found.append(o)
            return pid

    buffer = io.BytesIO()
    Collecting(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue(), found


def torch_zip(
    data_pkl: bytes,
    storages: list[Storage] = (),  # type: ignore[assignment]
    *,
    extra: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    first: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    compression: int = zipfile.ZIP_STORED,
) -> bytes:
    """A torch.save-style zip archive (written by Python's zipfile)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some cases
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in first:
                archive.writestr(name, data)
            archive.writestr("archive/data.pkl", data_pkl)
            archive.writestr("archive/byteorder", b"little")
            for storage in storages:
                archive.writestr(f"archive/data/{storage.key}", storage.data)
            archive.writestr("archive/version", b"3\n")
            for name, data in extra:
                archive.writestr(name, data)
    return buffer.getvalue()


def torch_zip_of(obj: Any, **kwargs: Any) -> bytes:
    data, storages = dumps_with_storages(obj)
    return torch_zip(data, storages, **kwargs)


def legacy(
    main_pickle: bytes, storages: list[Storage] = (), keys: list[str] | None = None
) -> bytes:  # type: ignore[assignment]
    """A legacy (non-zip) torch.save file around ``main_pickle``."""
    head = (
        pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    )
    keys = [s.key for s in storages] if keys is None else keys
    body = b"".join(struct.pack("<q", s.numel) + s.data for s in storages)
    return head + main_pickle + pickle.dumps(keys, protocol=2) + body


def legacy_of(obj: Any) -> bytes:
    """A legacy file holding ``obj``, with legacy persistent ids (6 fields)."""
    found: list[Storage] = []

    class LegacyPickler(pickle.Pickler):
        def persistent_id(self, o: Any) -> Any:
            if isinstance(o, Storage):
                if all(s is not o for s in found):
                    found.append(o)
                kind = o.storage_type or torch.FloatStorage
                return ("storage", kind, o.key, o.location, o.numel, None)
            return None

    buffer = io.BytesIO()
    LegacyPickler(buffer, protocol=2).dump(obj)
    return legacy(buffer.getvalue(), found)


def safetensors_file(header: Any, data: bytes = b"", *, raw_header: bytes | None = None) -> bytes:
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# ---------------------------------------------------------------- forged zip archives


@dataclass
class Entry:
    """One record of a hand-written zip, with knobs to make it lie."""

    name: str
    data: bytes
    method: int = 0
    flags: int = 0
    central_name: str | None = None
    central_size: int | None = None
    central_offset: int | None = None


def raw_zip(entries: list[Entry], *, before: bytes = b"", after: bytes = b"") -> bytes:
    """A zip written byte by byte (no zip64), so each field can be forged."""
    out = bytearray(before)
    centrals = bytearray()
    for entry in entries:
        offset = len(out) - len(before)
        name = entry.name.encode()
        crc = zipfile.crc32(entry.data)
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            20,
            entry.flags,
            entry.method,
            0,
            0,
            crc,
            len(entry.data),
            len(entry.data),
            len(name),
            0,
        )
        out += name + entry.data
        cname = (entry.central_name or entry.name).encode()
        size = len(entry.data) if entry.central_size is None else entry.central_size
        centrals += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            20,
            20,
            entry.flags,
            entry.method,
            0,
            0,
            crc,
            size,
            size,
            len(cname),
            0,
            0,
            0,
            0,
            0,
            offset if entry.central_offset is None else entry.central_offset,
        )
        centrals += cname
    cd_offset = len(out) - len(before)
    out += centrals
    out += struct.pack(
        "<4sHHHHIIH",
        b"PK\x05\x06",
        0,
        0,
        len(entries),
        len(entries),
        len(centrals),
        cd_offset,
        0,
    )
    return bytes(out + after)


def torch_entries(data_pkl: bytes | None = None) -> list[Entry]:
    """The records of a small valid checkpoint {"w": 4 floats}."""
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    pkl, _ = dumps_with_storages({"w": Tensor(storage, 0, (4,), (1,))})
    return [
        Entry("archive/data.pkl", data_pkl if data_pkl is not None else pkl),
        Entry("archive/byteorder", b"little"),
        Entry("archive/data/0", storage.data),
        Entry("archive/version", b"3\n"),
    ]


# ---------------------------------------------------------------- views past their storage


class Built:
    """Pickles as ``cls(*args)`` then BUILD ``state``: ``Tensor.set_(*state)`` for a tensor."""

    def __init__(self, cls: Any, args: tuple[Any, ...], state: Any) -> None:
        self.cls, self.args, self.state = cls, args, state

    def __reduce__(self) -> tuple[Any, tuple[Any, ...], Any]:
        return self.cls, self.args, self.state


def case_twin_zip(hostile_pkl: bytes, *, after: bytes = b"") -> bytes:
    """A small valid checkpoint plus ``archive/DATA.pkl``, written first so torch loads it.

    ``after`` goes in a last record: bytes a view past the storage would read.
    """
    padding = [Entry("archive/padding", after)] if after else []
    return raw_zip([Entry("archive/DATA.pkl", hostile_pkl), *torch_entries(), *padding])


def view_past_storage_pkl(key: str = "w") -> bytes:
    """{key: 1000 floats} over the 4-float storage "0" of ``torch_entries``."""
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    pkl, _ = dumps_with_storages({key: Tensor(storage, 0, (1000,), (1,))})
    return pkl


# ---------------------------------------------------------------- the allowlist abused
# argparse.Namespace and numpy scalars are allowlisted (app/readers/guards/allowlist.py) in the
# forms pickle writes them; each payload below uses them otherwise and must be refused.


def _namespace_setstate_twice() -> bytes:
    # The first BUILD stores a callable (torch allows _codecs.encode) as __setstate__; a
    # second BUILD would call it: a way to call anything allowed on any value.
    return (
        b"\x80\x02cargparse\nNamespace\n)\x81}"
        + _op_str("__setstate__")
        + b"c_codecs\nencode\nsb"
        + _op_str("x")
        + b"b."
    )


def _namespace_slot_state() -> bytes:
    # A (dict, slots) state: torch setattr()s each slot, __class__ included.
    slots = {"__class__": collections.OrderedDict}
    return pickle.dumps(Built(argparse.Namespace, (), ({}, slots)), protocol=2)


def _namespace_from_type() -> bytes:
    from_type = torch._tensor._rebuild_from_type_v2
    ns = argparse.Namespace
    return pickle.dumps(Call(from_type, ns, ns, (), {"__setstate__": 1}), protocol=2)


def _numpy_scalar(code: str, *, copy: bool = True, flags: int = 0) -> bytes:
    import numpy as np

    dtype = Built(np.dtype, (code, False, copy), (3, "|", None, None, None, -1, -1, flags))
    return pickle.dumps({"best_acc1": Call(np._core.multiarray.scalar, dtype, b"\0" * 8)}, 2)


def _numpy_dtype_class_called() -> bytes:
    import numpy as np

    return pickle.dumps({"d": Call(np.dtypes.Float64DType)}, protocol=2)


ALLOWLIST_ABUSE: dict[str, tuple[Callable[[], bytes], str]] = {
    "namespace-setstate-twice": (_namespace_setstate_twice, "set twice"),
    "namespace-slot-state": (_namespace_slot_state, "not a dict"),
    "namespace-from-type": (_namespace_from_type, "_rebuild_from_type_v2"),
    "numpy-scalar-object-dtype": (lambda: _numpy_scalar("O8", flags=63), "not a plain"),
    "numpy-scalar-shared-dtype": (lambda: _numpy_scalar("f8", copy=False), "not a plain"),
    "numpy-dtype-object-flags": (lambda: _numpy_scalar("f8", flags=63), "not a plain one"),
    "numpy-dtype-record": (lambda: _numpy_scalar("V8"), "not a plain"),
    "numpy-dtype-class-called": (_numpy_dtype_class_called, "never pickles it"),
}
