"""Zip record names are matched as torch's reader matches them (issue 17, item 3).

torch's PyTorchStreamReader asks miniz for records without its case-sensitive flag, so
``data.pkl`` finds ``archive/DATA.pkl``. An archive holding both a harmless ``data.pkl``
and a hostile ``DATA.pkl`` must not be scanned on one and loaded from the other.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
import torch

from app.errors import AppError, ArchiveLayoutError, UnsafeCheckpointError
from app.readers import CheckpointFormat, describe_safety, open_tensors, read_checkpoint
from app.readers.guards.torch_file import guard_torch_file
from app.readers.guards.zip_archive import check_zip
from tests.security.payloads import (
    CODE_PAYLOADS,
    Entry,
    case_twin_zip,
    raw_zip,
    torch_entries,
    view_past_storage_pkl,
)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "twin.pt"
    path.write_bytes(data)
    return path


def test_torch_reader_matches_record_names_ignoring_ascii_case_only(tmp_path: Path) -> None:
    # Pins what torch does, so that a torch upgrade changing it is noticed here.
    entries = [*torch_entries(), Entry("archive/Extra.Bin", b"x"), Entry("archive/É", b"y")]
    reader = torch._C.PyTorchFileReader(io.BytesIO(raw_zip(entries)))
    assert reader.has_record("extra.bin") and reader.has_record("EXTRA.BIN")
    assert reader.has_record("DATA.PKL") and reader.has_record("Data/0")
    assert not reader.has_record("é")  # miniz folds A-Z only
    records = check_zip(_write(tmp_path, raw_zip(entries)), max_entries=100)
    for probe in ("extra.bin", "EXTRA.BIN", "DATA.PKL", "Data/0", "é", "É", "missing"):
        found = records.get(f"archive/{probe}")
        assert (found is not None) == reader.has_record(probe), probe


def test_torch_loads_the_case_twin_the_guard_used_to_skip(tmp_path: Path) -> None:
    # Why the twin matters: torch loads DATA.pkl (its 1000-float view of a 4-float storage).
    path = _write(tmp_path, case_twin_zip(view_past_storage_pkl()))
    loaded = torch.load(path, map_location="meta", weights_only=True)
    assert loaded["w"].shape == (1000,)


@pytest.mark.parametrize(
    "twin",
    [
        "archive/DATA.pkl",
        "archive/data.PKL",
        "archive/DATA/0",
        "archive/ByteOrder",
        "archive/VERSION",
        "ARCHIVE/data.pkl",
    ],
)
def test_zip_guard_refuses_names_that_differ_only_in_case(tmp_path: Path, twin: str) -> None:
    path = _write(tmp_path, raw_zip([*torch_entries(), Entry(twin, b"little")]))
    with pytest.raises(ArchiveLayoutError, match="differ only in case") as info:
        check_zip(path, max_entries=100)
    problem = info.value.to_problem()
    assert (problem["status"], problem["type"]) == (422, "/problems/invalid-archive")
    assert repr(twin) in problem["detail"]


def test_case_twin_pickle_is_refused_by_every_reader_entry_point(tmp_path: Path) -> None:
    path = _write(tmp_path, case_twin_zip(view_past_storage_pkl()))
    with pytest.raises(ArchiveLayoutError, match="differ only in case"):
        read_checkpoint(path)
    with pytest.raises(ArchiveLayoutError, match="differ only in case"):
        describe_safety(path)
    with pytest.raises(ArchiveLayoutError, match="differ only in case"), open_tensors(path):
        pass


def _archive(names: tuple[str, str, str, str], pkl: bytes, byteorder: bytes) -> bytes:
    storage = torch_entries()[2].data
    contents = (pkl, byteorder, storage, b"3\n")
    return raw_zip([Entry(name, data) for name, data in zip(names, contents, strict=True)])


def test_upper_case_pickle_is_the_one_scanned(tmp_path: Path) -> None:
    evil = CODE_PAYLOADS["reduce-posix-system-protocol-2"]("/nonexistent/canary")
    names = ("archive/DATA.PKL", "archive/byteorder", "archive/data/0", "archive/version")
    path = _write(tmp_path, _archive(names, evil, b"little"))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        guard_torch_file(path, fmt=CheckpointFormat.TORCH_ZIP)
    with pytest.raises(AppError) as info:  # sniffing wants the "data.pkl" torch.save writes
        read_checkpoint(path)
    assert 400 <= info.value.status < 500


def test_upper_case_byteorder_and_storage_are_read_as_torch_reads_them(tmp_path: Path) -> None:
    # torch honours "BYTEORDER" = big: the lazy reader must not map the bytes as little.
    names = ("archive/data.pkl", "archive/BYTEORDER", "archive/DATA/0", "archive/Version")
    path = _write(tmp_path, _archive(names, torch_entries()[0].data, b"big"))
    expected = torch.load(path, weights_only=True)["w"]
    swapped = struct.unpack(">4f", struct.pack("<4f", 1.0, 2.0, 3.0, 4.0))
    assert expected.tolist() == list(swapped)
    assert read_checkpoint(path).index.tensors["w"].shape == (4,)
    with open_tensors(path) as source:
        assert torch.equal(source.read("w"), expected)
