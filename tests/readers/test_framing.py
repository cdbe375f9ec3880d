"""Protocol 4 and 5 pickles rewritten for torch's weights_only reader (app/readers/framing)."""

from __future__ import annotations

import inspect
import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torch import _weights_only_unpickler as weights_only

from app.errors import CorruptCheckpointError, LimitExceededError, UnsafeCheckpointError
from app.readers import open_tensors, read_checkpoint
from app.readers.framing import reading_protocol_4, to_protocol_2


def _resnet18_p4(tmp_path: Path, *, legacy: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    """A resnet18 state_dict as ``torch.save(sd, path, pickle_protocol=4)`` writes it."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / ("legacy.pt" if legacy else "zip.pt")
    torch.save(state, path, pickle_protocol=4, _use_new_zipfile_serialization=not legacy)
    return path, state


def _torch_reads(data: bytes) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4"
        return weights_only.Unpickler(io.BytesIO(data)).load()


def test_torch_weights_only_unpickler_still_lacks_protocol_4_opcodes() -> None:
    # If this fails, torch reads protocol 4 itself: framing.py can go (README says why).
    data = pickle.dumps(OrderedDict(a=1), protocol=4)
    assert data[2] == 0x95  # FRAME
    with pytest.raises(pickle.UnpicklingError, match="Unsupported operand 149"):
        _torch_reads(data)
    unframed = data[:2] + data[11:]  # stripping FRAME alone is not enough
    with pytest.raises(pickle.UnpicklingError, match=r"Unsupported operand 14[0-9]"):
        _torch_reads(unframed)
    assert _torch_reads(to_protocol_2(data, max_bytes=1000)) == OrderedDict(a=1)


def test_torch_private_unpickler_api_is_what_framing_replaces() -> None:
    # framing.reading_protocol_4 swaps torch._weights_only_unpickler.Unpickler: torch.load
    # must reach it through the module at each load (zip: _load subclasses
    # pickle_module.Unpickler; legacy: _weights_only_unpickler.load calls Unpickler).
    params = inspect.signature(weights_only.Unpickler.__init__).parameters
    assert list(params) == ["self", "file", "encoding"]
    assert "Unpickler" in weights_only.load.__code__.co_names
    load_source = inspect.getsource(torch.serialization.load)
    assert load_source.count("_weights_only_unpickler,") == 2  # zip and legacy
    assert "class UnpicklerWrapper(pickle_module.Unpickler)" in inspect.getsource(
        torch.serialization._load
    )
    original = weights_only.Unpickler
    with reading_protocol_4(), reading_protocol_4():
        assert weights_only.Unpickler is not original
        assert issubclass(weights_only.Unpickler, original)
    assert weights_only.Unpickler is original


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_framing_protocol_4_resnet18_reads_and_merges(tmp_path: Path, legacy: bool) -> None:
    path, state = _resnet18_p4(tmp_path, legacy=legacy)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == ("torch_legacy" if legacy else "torch_zip")
    assert checkpoint.index.keys() == list(state)
    assert checkpoint.safety is not None and not checkpoint.safety.refused_globals
    with open_tensors(path) as source:
        assert (source.span("fc.weight") is None) is legacy  # zip: read by byte spans
        for key in ("conv1.weight", "fc.weight", "layer4.1.bn2.running_var"):
            assert torch.equal(source.read(key), state[key])


def test_framing_stack_global_names_from_the_memo_and_strings_reused() -> None:
    # A global named by strings pushed inline, another by the same strings read back from
    # the memo, and a memoised name string that is also a dict key.
    data = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        b"}\x94"  # d = {} (memo 0)
        b"\x8c\x01k\x94"  # "k" (memo 1)
        b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)Rs"  # d["k"] = OrderedDict()
        b"\x8c\x02k2h\x02h\x03\x93)Rs"  # d["k2"] = OrderedDict(), names from the memo
        b"h\x02h\x01s"  # d["collections"] = "k"
        b"."
    )
    expected = pickle.loads(data)
    assert _torch_reads(to_protocol_2(data, max_bytes=1000)) == expected


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"\x80\x04K\x012.", UnsafeCheckpointError, "opcode DUP"),
        (b"\x80\x04K\x01K\x02\x93.", CorruptCheckpointError, "not strings"),
        (b"\x80\x04\x8c\x03a\nb\x8c\x01c\x93.", CorruptCheckpointError, "malformed"),
        (b"\x80\x04h\x05.", CorruptCheckpointError, "malformed"),
    ],
    ids=["dup", "global-from-ints", "newline-in-name", "unknown-memo"],
)
def test_framing_refuses_what_torch_cannot_read_or_what_is_not_a_name(
    data: bytes, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        to_protocol_2(data, max_bytes=1000)


def test_framing_bounds_the_rewrite() -> None:
    # A 200-character global name, then read back 500 times: each read becomes the string.
    name = b"m" * 200
    data = b"\x80\x04\x8c\x01a\x94\x8c\xc8" + name + b"\x94\x93](" + b"h\x01" * 500 + b"e."
    with pytest.raises(LimitExceededError, match="max_pickle_bytes=2000"):
        to_protocol_2(data, max_bytes=2000)
