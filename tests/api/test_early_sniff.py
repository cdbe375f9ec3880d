"""The head rules that refuse an upload while it streams: only what no reader accepts."""

from __future__ import annotations

import io
import zipfile

import pytest

from app.api.early_sniff import HEAD_BYTES, refuse_unlikely_head
from app.errors import UnsupportedFormatError


def _zip_head(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in names:
            archive.writestr(name, b"x" * 10)
    return buffer.getvalue()[:HEAD_BYTES]


@pytest.mark.parametrize(
    ("head", "detected"),
    [
        (b"name,value\n1,2\n", "a text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "a PNG image"),
        (b"", "an empty file"),
        (bytes(range(256)) * 4, "unrecognised binary data"),
    ],
)
def test_refuse_unlikely_head_not_a_checkpoint(head: bytes, detected: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=f"^Detected {detected}\\. Accepted") as info:
        refuse_unlikely_head(head)
    assert info.value.extensions["detected"] == detected


@pytest.mark.parametrize(
    "first", ["archive/data/0", "archive/constants.pkl", "m/code/__torch__/x.py", "a/extra/x"]
)
def test_refuse_unlikely_head_torchscript_first_entry(first: str) -> None:
    with pytest.raises(UnsupportedFormatError, match="TorchScript archives") as info:
        refuse_unlikely_head(_zip_head(first, "archive/data.pkl"))
    assert info.value.extensions["detected"] == "torchscript_or_exported_program"


def test_refuse_unlikely_head_passes_what_may_be_a_checkpoint() -> None:
    legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + bytes(40)
    safetensors = (30).to_bytes(8, "little") + b'{"__metadata__": {}}'
    for head in (
        _zip_head("archive/data.pkl", "archive/data/0"),  # torch.save writes data.pkl first
        _zip_head("weights/whatever.bin"),  # the readers decide at the end
        b"PK\x05\x06" + bytes(18),
        legacy,
        safetensors,
    ):
        refuse_unlikely_head(head)
