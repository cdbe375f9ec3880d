"""The guards in front of torch.load, unit by unit (the corpus drives them over HTTP)."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from app.errors import (
    ArchiveLayoutError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from app.readers import describe_safety, sniff_format
from app.readers.guards.pickle_scan import scan_pickle
from app.readers.guards.torch_file import guard_torch_file
from app.readers.guards.zip_archive import check_zip
from app.readers.limits import ReadLimits
from tests.security.payloads import (
    ALLOWLIST_ABUSE,
    CODE_PAYLOADS,
    Entry,
    raw_zip,
    torch_entries,
    torch_zip,
)


def _write(tmp_path: Path, data: bytes, name: str = "f") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_zip_guard_accepts_torch_save_and_maps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "my model (v2) é.pt"
    torch.save({"w": torch.zeros(3)}, path)
    records = check_zip(path, max_entries=100)
    prefix = next(iter(records)).split("/")[0]
    assert f"{prefix}/data.pkl" in records
    data = path.read_bytes()
    record = records[f"{prefix}/data/0"]
    assert data[record.data_offset : record.data_offset + record.size] == bytes(12)


def test_zip_guard_counts_entries_before_reading_them(tmp_path: Path) -> None:
    entries = torch_entries() + [Entry(f"archive/x/{i}", b"") for i in range(50)]
    with pytest.raises(LimitExceededError, match="max_zip_entries=10") as info:
        check_zip(_write(tmp_path, raw_zip(entries)), max_entries=10)
    assert info.value.extensions == {"limit": "max_zip_entries", "limit_value": 10}


@pytest.mark.parametrize(
    ("before", "after", "fragment"),
    [(b"", b"\0", "data after the archive"), (b"PK\x03\x04" + bytes(26), b"", "central directory")],
)
def test_zip_guard_refuses_bytes_outside_the_archive(
    tmp_path: Path, before: bytes, after: bytes, fragment: str
) -> None:
    path = _write(tmp_path, raw_zip(torch_entries(), before=before, after=after))
    with pytest.raises(ArchiveLayoutError, match=fragment):
        check_zip(path, max_entries=100)


def test_pickle_scan_lists_globals_of_every_protocol_and_opcode() -> None:
    for name, build in CODE_PAYLOADS.items():
        scan = scan_pickle(io.BytesIO(build("/nonexistent")), limits=ReadLimits())
        assert scan.globals, name
    two = scan_pickle(io.BytesIO(pickle.dumps({1, 2}, protocol=2)), limits=ReadLimits())
    assert two.globals == ("builtins.set",)  # Python 2 names as torch reads them


def test_pickle_scan_bounds_depth_and_expansion() -> None:
    deep = b"\x80\x02" + b"]" * 10 + b"a" * 9 + b"."
    with pytest.raises(LimitExceededError, match="max_depth=5"):
        scan_pickle(io.BytesIO(deep), limits=ReadLimits(max_depth=5))
    nested: list[object] = []
    for _ in range(20):
        nested = [nested, nested]
    with pytest.raises(LimitExceededError, match="max_pickle_nodes=1000"):
        scan_pickle(io.BytesIO(pickle.dumps(nested, 2)), limits=ReadLimits(max_pickle_nodes=1000))


def test_pickle_scan_refuses_malformed_streams() -> None:
    for data in (b"", b"\x80\x02", b"\x80\x02h\x05.", b"\x80\x02a.", b"\xff"):
        with pytest.raises(CorruptCheckpointError, match="malformed or truncated"):
            scan_pickle(io.BytesIO(data), limits=ReadLimits())


def test_guard_limits_the_pickle_size(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1), "pad": "x" * 5000}, path)
    with pytest.raises(LimitExceededError, match="max_pickle_bytes=1000"):
        guard_torch_file(path, limits=ReadLimits(max_pickle_bytes=1000))
    legacy = tmp_path / "l.pt"
    torch.save(
        {"w": torch.zeros(1), "pad": "x" * 5000}, legacy, _use_new_zipfile_serialization=False
    )
    with pytest.raises(LimitExceededError, match="max_pickle_bytes=1000"):
        guard_torch_file(legacy, limits=ReadLimits(max_pickle_bytes=1000))


def test_describe_safety_of_each_format(tmp_path: Path) -> None:
    state = {"w": torch.zeros(2)}
    st = _write(tmp_path, save(state), "m.safetensors")
    assert describe_safety(st).to_dict() == {
        "format": "safetensors",
        "uses_pickle": False,
        "pickle_globals": [],
        "refused_globals": [],
        "allowed_globals": [],
    }
    pt = tmp_path / "m.pt"
    torch.save(state, pt)
    safety = describe_safety(pt)
    assert safety.uses_pickle and not safety.refused_globals
    assert "torch._utils._rebuild_tensor_v2" in safety.pickle_globals


def test_sniff_damaged_zip_directory_is_corrupt_whatever_zipfile_raises(tmp_path: Path) -> None:
    data = bytearray(raw_zip(torch_entries()))
    at = data.rindex(b"PK\x01\x02")
    data[at + 6 : at + 8] = struct.pack("<H", 0x3FF)  # "version needed" 102.3: NotImplemented
    with pytest.raises(CorruptCheckpointError, match="directory cannot be read"):
        sniff_format(_write(tmp_path, bytes(data)))


@pytest.mark.parametrize("name", list(ALLOWLIST_ABUSE))
def test_guard_allowlisted_globals_only_in_their_writers_form(tmp_path: Path, name: str) -> None:
    build, reason = ALLOWLIST_ABUSE[name]
    path = _write(tmp_path, torch_zip(build()), "abuse.pt")
    with pytest.raises(UnsafeCheckpointError, match=reason) as info:
        guard_torch_file(path)
    safety = info.value.extensions["safety"]
    assert safety["allowed_globals"] and not safety["refused_globals"]
