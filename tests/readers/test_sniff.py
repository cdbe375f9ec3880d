"""Tests for sniff_format: formats come from bytes, never from the file name."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from app.errors import CorruptCheckpointError, UnsupportedFormatError
from app.readers import CheckpointFormat, sniff_format

from .helpers import Saver, tiny_state_dict


def test_sniff_format_torch_zip_whatever_the_extension(save_zip: Saver) -> None:
    assert sniff_format(save_zip(tiny_state_dict(), "weights.safetensors")) == "torch_zip"


def test_sniff_format_torch_legacy_whatever_the_extension(save_legacy: Saver) -> None:
    path = save_legacy(tiny_state_dict(), "weights.zip")
    assert sniff_format(path) is CheckpointFormat.TORCH_LEGACY


def test_sniff_format_safetensors_whatever_the_extension(save_safetensors: Saver) -> None:
    path = save_safetensors(tiny_state_dict(), "model.pt")
    assert sniff_format(path) is CheckpointFormat.SAFETENSORS


@pytest.mark.parametrize(
    ("content", "detected"),
    [
        (b"", "an empty file"),
        (b"epoch,loss\n1,0.5\n", "a text file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "a PNG image"),
        (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "a plain pickle stream"),
    ],
)
def test_sniff_format_refuses_non_checkpoints(
    tmp_path: Path, content: bytes, detected: str
) -> None:
    path = tmp_path / "upload.pt"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormatError, match=f"Detected {detected}.*Accepted formats"):
        sniff_format(path)


def test_sniff_format_refuses_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(b"\xfe\xff" + os.urandom(4094))
    with pytest.raises(UnsupportedFormatError, match="Detected unrecognised binary data") as info:
        sniff_format(path)
    assert info.value.status == 415
    assert info.value.extensions["accepted"] == ["torch_zip", "torch_legacy", "safetensors"]


def test_sniff_format_refuses_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    with pytest.raises(UnsupportedFormatError, match=r"zip archive without '<archive>/data\.pkl'"):
        sniff_format(path)


def test_sniff_format_refuses_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* is deprecated
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsupportedFormatError, match=r"TorchScript.*model\.state_dict\(\)"):
        sniff_format(path)


def test_sniff_format_refuses_exported_program_layout(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/archive_format", "pt2")
        archive.writestr("model/models/model.json", "{}")
    with pytest.raises(UnsupportedFormatError, match="exported programs are not accepted"):
        sniff_format(path)


def test_sniff_format_truncated_zip_is_corrupt(save_zip: Saver) -> None:
    path = save_zip(tiny_state_dict(), "model.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        sniff_format(path)


def test_sniff_format_safetensors_length_beyond_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.safetensors"
    path.write_bytes((10_000).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(UnsupportedFormatError, match="Detected"):
        sniff_format(path)
