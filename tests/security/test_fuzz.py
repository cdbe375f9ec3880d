"""Fuzzing the readers (hypothesis, bounded): every input ends in a documented error type.

Mutations of valid torch zip, legacy and safetensors files, and of hand-written zips, go
through the same entry points a worker uses; anything but success or an ``AppError`` (an
uncaught exception, a hang past the deadline, a crash) fails the run.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from app.errors import AppError
from app.readers import describe_safety, read_checkpoint
from app.readers.guards.pickle_scan import scan_pickle
from app.readers.limits import ReadLimits, set_limits
from tests.security.payloads import raw_zip, torch_entries

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = ReadLimits(max_pickle_bytes=256 * 1024, max_header_bytes=64 * 1024, max_zip_entries=64)


def _saved(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


_STATE = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2, dtype=torch.half)}
SEEDS = {
    "torch_zip": _saved({"state_dict": _STATE, "epoch": 3}),
    "torch_legacy": _saved(_STATE, _use_new_zipfile_serialization=False),
    "safetensors": save(_STATE),
    "raw_zip": raw_zip(torch_entries()),
}


@pytest.fixture(scope="module", autouse=True)
def _fuzz_limits() -> Iterator[None]:
    previous = set_limits(LIMITS)
    yield
    set_limits(previous)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "upload"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "int"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif kind == "int" and len(data) >= at + 8:
            data[at : at + 8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 2**31, 2**63 - 1])))
    return bytes(data)


def _read(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with contextlib.suppress(AppError):  # a documented problem: most mutations end here
        read_checkpoint(path)
        describe_safety(path)


@FUZZ
@given(data=mutated())
def test_fuzz_mutated_checkpoints_end_in_documented_errors(scratch: Path, data: bytes) -> None:
    _read(scratch, data)


@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes_end_in_documented_errors(scratch: Path, data: bytes) -> None:
    _read(scratch, data)


@FUZZ
@given(data=st.binary(max_size=256))
def test_fuzz_pickle_scan_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(AppError):
        scan_pickle(io.BytesIO(b"\x80\x02" + data), limits=LIMITS)
