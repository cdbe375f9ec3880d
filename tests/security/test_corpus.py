"""The hostile-input corpus, sent through the real API with a real worker process.

Every case must end in its documented 4xx problem (as the HTTP answer, or as the failed
check's ``error`` when the worker found it), run no code (no canary file), leave no temp
file in the data directory, and the service must answer the next good request.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from fastapi.testclient import TestClient
from safetensors.torch import save

from app.config import Settings
from tests.security.conftest import (
    assert_clean_problem,
    assert_serves_a_good_check,
    good_checkpoint,
    post_bytes,
    problem_of,
)
from tests.security.payloads import (
    ALLOWLIST_ABUSE,
    CODE_PAYLOADS,
    Built,
    Call,
    Entry,
    Storage,
    Tensor,
    case_twin_zip,
    float_storage,
    legacy,
    legacy_of,
    raw_zip,
    safetensors_file,
    torch_entries,
    torch_zip,
    torch_zip_of,
    view_past_storage_pkl,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str], bytes]  # canary path -> file bytes
    slug: str


def _saved(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def _torchscript() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()


def _tensor_with(offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    return torch_zip_of(
        {"w": Tensor(float_storage("0", [1.0, 2.0, 3.0, 4.0]), offset, size, stride)}
    )


def _sparse_with_bad_indices() -> bytes:
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[0, 7]]), torch.tensor([1.0, 2.0]), (3,), check_invariants=False
    )
    return _saved({"w": sparse})


def _entries(change: Callable[[list[Entry]], None]) -> bytes:
    entries = torch_entries()
    change(entries)
    return raw_zip(entries)


def _deflated(entries: list[Entry]) -> None:
    data = entries[2].data
    entries[2] = Entry(entries[2].name, zlib.compress(data)[2:-4], method=8)


def _malicious_first(canary: str) -> bytes:
    evil = CODE_PAYLOADS["reduce-posix-system-protocol-2"](canary)
    return raw_zip([Entry("archive/data.pkl", evil), *torch_entries()])


def _deep_pickle() -> bytes:
    return b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."


def _memo_bomb() -> bytes:
    nested: list[object] = []
    for _ in range(60):
        nested = [nested, nested]
    return pickle.dumps({"x": nested}, protocol=2)


def _many_tensors_torch(count: int) -> bytes:
    storage = float_storage("0", [0.0])
    return torch_zip_of({f"t{i}": Tensor(storage, 0, (1,), (1,)) for i in range(count)})


def _many_tensors_safetensors(count: int) -> bytes:
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
    return safetensors_file(header)


def _st(entries: dict[str, object], data: bytes) -> bytes:
    return safetensors_file(entries, data)


def _f32(offsets: list[int], shape: list[int] | None = None) -> dict[str, object]:
    return {
        "dtype": "F32",
        "shape": shape or [(offsets[1] - offsets[0]) // 4],
        "data_offsets": offsets,
    }


def _v3(offset: int, size: tuple[int, ...], dtype: torch.dtype) -> bytes:
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    v3 = torch._utils._rebuild_tensor_v3
    od = collections.OrderedDict()
    return torch_zip_of({"w": Call(v3, storage, offset, size, (1,), False, od, dtype)})


def _indirect_view(kind: str) -> bytes:
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    if kind == "from-type":
        v2_args = (storage, 0, (1000,), (1,), False, collections.OrderedDict())
        from_type = torch._tensor._rebuild_from_type_v2
        view: object = Call(from_type, torch._utils._rebuild_tensor_v2, torch.Tensor, v2_args, {})
    else:
        meta = torch._utils._rebuild_meta_tensor_no_storage, (torch.float32, (1,), (1,), False)
        view = Built(*meta, (storage, 0, (1000,), (1,)))
    return torch_zip_of({"w": view})


def _big_endian() -> bytes:
    entries = torch_entries()
    entries[1] = Entry("archive/byteorder", b"big")
    return raw_zip(entries)


_ENTRY = b'{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
_DUPLICATE_KEYS = b'{"a": ' + _ENTRY + b', "a": ' + _ENTRY + b"}"
_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
_VALID_ZIP = torch_zip_of({"w": Tensor(float_storage("0", [1.0, 2.0]), 0, (2,), (1,))})
_VALID_LEGACY = legacy_of({"w": Tensor(float_storage("0", [1.0, 2.0]), 0, (2,), (1,))})

CASES: list[Case] = [
    *(
        Case(f"zip-{n}", lambda c, f=f: torch_zip(f(c)), "unsafe-checkpoint")
        for n, f in CODE_PAYLOADS.items()
    ),
    *(
        Case(f"legacy-{n}", lambda c, f=f: legacy(f(c)), "unsafe-checkpoint")
        for n, f in CODE_PAYLOADS.items()
    ),
    *(
        Case(f"allowlist-{n}", lambda c, f=f: torch_zip(f()), "unsafe-checkpoint")
        for n, (f, _reason) in ALLOWLIST_ABUSE.items()
    ),
    Case("zip-malicious-record-before-benign-twin", _malicious_first, "invalid-archive"),
    Case("torchscript-archive", lambda c: _torchscript(), "unsupported-format"),
    Case("pickled-nn-module", lambda c: _saved(torch.nn.Linear(2, 2)), "unsafe-checkpoint"),
    Case(
        "pickled-nn-module-legacy",
        lambda c: _saved(torch.nn.Linear(2, 2), _use_new_zipfile_serialization=False),
        "unsafe-checkpoint",
    ),
    Case("numpy-array-in-pickle", lambda c: _saved({"w": np.zeros(3)}), "unsafe-checkpoint"),
    Case(
        "sparse-tensor-invalid-indices", lambda c: _sparse_with_bad_indices(), "corrupt-checkpoint"
    ),
    Case("storage-offset-outside", lambda c: _tensor_with(10, (2,), (1,)), "corrupt-checkpoint"),
    Case("storage-size-outside", lambda c: _tensor_with(0, (100,), (1,)), "corrupt-checkpoint"),
    Case(
        "storage-stride-outside", lambda c: _tensor_with(0, (2, 2), (100, 1)), "corrupt-checkpoint"
    ),
    Case(
        "storage-declares-more-than-record",
        lambda c: torch_zip_of({"w": Tensor(Storage("0", 10**9, b"\0" * 16), 0, (4,), (1,))}),
        "corrupt-checkpoint",
    ),
    Case(
        "legacy-declares-more-than-file",
        lambda c: legacy_of({"w": Tensor(Storage("0", 10**9, b""), 0, (4,), (1,))}),
        "corrupt-checkpoint",
    ),
    Case("truncated-zip", lambda c: _VALID_ZIP[: len(_VALID_ZIP) // 2], "corrupt-checkpoint"),
    Case("truncated-legacy", lambda c: _VALID_LEGACY[:60], "corrupt-checkpoint"),
    Case("empty-file", lambda c: b"", "unsupported-format"),
    Case(
        "random-bytes",
        lambda c: bytes((i * 7919 + 13) % 251 for i in range(4096)),
        "unsupported-format",
    ),
    Case("text-file", lambda c: b"this is not a checkpoint\n" * 20, "unsupported-format"),
    Case("png-image", lambda c: _PNG, "unsupported-format"),
    Case("zip-deflated-record", lambda c: _entries(_deflated), "invalid-archive"),
    Case(
        "zip-encrypted-record",
        lambda c: _entries(lambda e: setattr(e[2], "flags", 1)),
        "invalid-archive",
    ),
    Case(
        "zip-huge-declared-size",
        lambda c: _entries(lambda e: setattr(e[2], "central_size", 2**32 - 2)),
        "invalid-archive",
    ),
    Case(
        "zip-thousands-of-entries",
        lambda c: _entries(lambda e: e.extend(Entry(f"archive/x/{i}", b"") for i in range(3000))),
        "limit-exceeded",
    ),
    Case(
        "zip-dotdot-name",
        lambda c: _entries(lambda e: e.append(Entry("archive/../../evil", b"x"))),
        "invalid-archive",
    ),
    Case(
        "zip-absolute-name",
        lambda c: _entries(lambda e: e.append(Entry("/etc/evil", b"x"))),
        "invalid-archive",
    ),
    Case("zip-junk-after", lambda c: _VALID_ZIP + b"JUNK" * 8, "invalid-archive"),
    Case(
        "zip-junk-before-inside-archive",
        lambda c: raw_zip(torch_entries(), before=b"PK\x03\x04" + b"\0" * 40),
        "invalid-archive",
    ),
    Case(
        "zip-local-central-name-mismatch",
        lambda c: _entries(lambda e: setattr(e[1], "central_name", "archive/bytXorder")),
        "invalid-archive",
    ),
    Case(
        "zip-overlapping-records",
        lambda c: _entries(lambda e: setattr(e[3], "central_offset", 0)),
        "invalid-archive",
    ),
    Case(
        "zip-case-twin-pickle",
        lambda c: case_twin_zip(view_past_storage_pkl()),
        "invalid-archive",
    ),
    Case(
        "zip-case-twin-storage",
        lambda c: _entries(lambda e: e.append(Entry("archive/DATA/0", bytes(4000)))),
        "invalid-archive",
    ),
    Case(
        "rebuild-tensor-v3-past-storage",
        lambda c: _v3(0, (1000,), torch.float32),
        "corrupt-checkpoint",
    ),
    Case(
        "rebuild-tensor-v3-wider-dtype", lambda c: _v3(0, (4,), torch.float64), "corrupt-checkpoint"
    ),
    Case(
        "rebuild-from-type-past-storage",
        lambda c: _indirect_view("from-type"),
        "corrupt-checkpoint",
    ),
    Case("build-set-past-storage", lambda c: _indirect_view("build-set"), "corrupt-checkpoint"),
    Case(
        "cuda-storage-type-larger-than-record",
        lambda c: torch_zip_of(
            {
                "w": Tensor(
                    Storage("0", 4, bytes(4), storage_type=torch.cuda.FloatStorage), 0, (4,), (1,)
                )
            }
        ),
        "corrupt-checkpoint",
    ),
    Case(
        "tensor-of-uninitialized-memory",
        lambda c: torch_zip_of({"w": Call(torch.Tensor, 262144)}),
        "corrupt-checkpoint",
    ),
    Case("pickle-nested-100k-deep", lambda c: torch_zip(_deep_pickle()), "limit-exceeded"),
    Case("pickle-memo-bomb", lambda c: torch_zip(_memo_bomb()), "limit-exceeded"),
    Case(
        "pickle-huge-string",
        lambda c: torch_zip(pickle.dumps({"x": "a" * 2_000_000}, protocol=2)),
        "limit-exceeded",
    ),
    Case(
        "safetensors-header-longer-than-file",
        lambda c: struct.pack("<Q", 10_000) + b'{"a": 1}',
        "unsupported-format",
    ),
    Case(
        "safetensors-header-over-limit",
        lambda c: safetensors_file({}, raw_header=b"{" + b" " * (17 * 1024 * 1024) + b"}"),
        "limit-exceeded",
    ),
    Case(
        "safetensors-invalid-json",
        lambda c: safetensors_file({}, raw_header=b'{"a": [1, 2'),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-duplicate-key",
        lambda c: (
            safetensors_file(
                {},
                raw_header=_DUPLICATE_KEYS,
            )
            + b"\0" * 4
        ),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-overlapping-offsets",
        lambda c: _st({"a": _f32([0, 8]), "b": _f32([4, 12])}, b"\0" * 12),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-gap-between-tensors",
        lambda c: _st({"a": _f32([0, 4]), "b": _f32([8, 12])}, b"\0" * 12),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-offsets-past-end",
        lambda c: _st({"a": _f32([0, 400])}, b"\0" * 4),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-garbage-dtype",
        lambda c: _st(
            {"a": {"dtype": "\x1b[31m", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4
        ),
        "corrupt-checkpoint",
    ),
    Case(
        "safetensors-shape-not-byte-count",
        lambda c: _st({"a": _f32([0, 8], shape=[3])}, b"\0" * 8),
        "corrupt-checkpoint",
    ),
    Case("dict-without-tensors", lambda c: _saved({"epoch": 3, "lr": 0.1}), "no-tensors"),
    Case(
        "200k-tiny-tensors-safetensors",
        lambda c: _many_tensors_safetensors(200_000),
        "limit-exceeded",
    ),
    Case("12k-tiny-tensors-torch", lambda c: _many_tensors_torch(12_000), "limit-exceeded"),
    Case(
        "keys-not-strings",
        lambda c: _saved({1: torch.zeros(1), (2, 3): torch.zeros(1)}),
        "no-tensors",
    ),
    Case(
        "keys-with-terminal-escapes",
        lambda c: _saved({"\x1b[2Jfc.weight": torch.zeros(1)}),
        "corrupt-checkpoint",
    ),
    Case(
        "key-of-100k-characters", lambda c: save({"k" * 100_000: torch.zeros(1)}), "limit-exceeded"
    ),
]


@pytest.fixture(scope="module")
def checked_client(corpus_client: TestClient) -> TestClient:
    assert_serves_a_good_check(corpus_client)  # workers warm before the first timing
    return corpus_client


def test_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_bad_file_is_a_specific_problem_and_runs_nothing(
    case: Case, checked_client: TestClient, corpus_settings: Settings, canary_dir: Path
) -> None:
    canary = canary_dir / case.name
    response = post_bytes(checked_client, case.build(str(canary)))
    assert_clean_problem(problem_of(response), case.slug)
    assert not canary.exists()
    assert list((corpus_settings.data_dir / "tmp").iterdir()) == []
    assert_serves_a_good_check(checked_client)


def test_corpus_unsafe_problem_lists_what_the_pickle_imports(
    checked_client: TestClient, canary_dir: Path
) -> None:
    payload = CODE_PAYLOADS["builtins-getattr-chain"](str(canary_dir / "listing"))
    problem = problem_of(post_bytes(checked_client, torch_zip(payload)))
    assert problem["safety"] == {
        "format": "torch_zip",
        "uses_pickle": True,
        "pickle_globals": ["builtins.getattr", "builtins.__import__"],
        "refused_globals": ["builtins.getattr", "builtins.__import__"],
        "allowed_globals": [],
    }  # "system" is fetched by getattr at load time: listed statically, it is not a global
    assert "builtins.getattr" in problem["detail"]


@pytest.mark.parametrize(
    ("options", "slug"),
    [
        ("{not json", "invalid-options"),
        ('{"unknown_field": 1}', "invalid-options"),
        ('{"architecture_kwargs": {"num_classes": NaN}}', "invalid-options"),
        ('{"architecture_kwargs": {"num_classes": 1e999}}', "invalid-options"),
        ('{"rename": [{"pattern": "(a)\\\\1", "replacement": "b"}]}', "invalid-options"),
        ('{"rename": [{"pattern": "([", "replacement": "b"}]}', "invalid-options"),
        ('{"architecture_kwargs": {"num_clases": 10}}', "invalid-architecture-arguments"),
    ],
)
def test_corpus_bad_options_are_specific_problems(
    checked_client: TestClient, corpus_settings: Settings, options: str, slug: str
) -> None:
    response = post_bytes(checked_client, good_checkpoint(), options=options)
    assert_clean_problem(problem_of(response), slug)
    assert list((corpus_settings.data_dir / "tmp").iterdir()) == []


def test_corpus_request_abuse_is_refused(
    checked_client: TestClient, corpus_settings: Settings
) -> None:
    # A real checkpoint's first bytes, so the size limit is what refuses it (not the sniff).
    too_big = good_checkpoint() + b"\0" * corpus_settings.max_upload_bytes
    assert_clean_problem(problem_of(post_bytes(checked_client, too_big)), "upload-too-large")
    wrong_type = checked_client.post(
        "/v1/checks", content=b"x", headers={"content-type": "text/plain"}
    )
    assert_clean_problem(problem_of(wrong_type), "unsupported-media-type")
    empty = checked_client.post(
        "/v1/checks",
        content=b"--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_clean_problem(problem_of(empty), "invalid-request")
    assert list((corpus_settings.data_dir / "tmp").iterdir()) == []
    assert_serves_a_good_check(checked_client)


def test_corpus_catastrophic_rename_pattern_finishes(checked_client: TestClient) -> None:
    # Python's re takes seconds on this; RE2 is linear, so the check simply finishes.
    keys = {"a" * 26 + "!": torch.zeros(1), "fc.bias": torch.zeros(1000)}
    options = {"rename": [{"pattern": "^(a+)+$", "replacement": "x"}]}
    check = post_bytes(checked_client, save(keys), options=options).json()
    assert check["status"] == "succeeded", check


@pytest.mark.parametrize(
    "content",
    [
        torch_zip_of(
            {"w": Tensor(float_storage("0", [1.0, 2.0], location="cuda:0"), 0, (2,), (1,))}
        ),
        _saved({"fc.bias": torch.nn.Parameter(torch.zeros(1000))}),
        _big_endian(),
    ],
    ids=["cuda-tensor-maps-to-cpu", "nn-parameter-values", "big-endian-zip"],
)
def test_corpus_odd_but_safe_files_load(checked_client: TestClient, content: bytes) -> None:
    check = post_bytes(checked_client, content, options={"merge": {}}).json()
    assert check["status"] == "succeeded", check
    report = checked_client.get(check["links"]["report"]).json()
    assert report["safety"]["uses_pickle"] is True
    assert report["safety"]["refused_globals"] == []


_SECRET = b"bytes after the storage " * 400  # what the merged fc.bias would have held


def _v3_bias() -> bytes:
    storage = float_storage("0", [1.0, 2.0, 3.0, 4.0])
    v3, od = torch._utils._rebuild_tensor_v3, collections.OrderedDict()
    bias = Call(v3, storage, 0, (1000,), (1,), False, od, torch.float32)
    return torch_zip_of({"fc.bias": bias}, extra=[("archive/padding", _SECRET)])


@pytest.mark.parametrize(
    ("content", "slug"),
    [
        (case_twin_zip(view_past_storage_pkl("fc.bias"), after=_SECRET), "invalid-archive"),
        (_v3_bias(), "corrupt-checkpoint"),
    ],
    ids=["case-twin", "rebuild-tensor-v3"],
)
def test_corpus_views_past_their_storage_fail_a_merge_too(
    checked_client: TestClient, corpus_settings: Settings, content: bytes, slug: str
) -> None:
    response = post_bytes(checked_client, content, options={"merge": {}})
    assert_clean_problem(problem_of(response), slug)
    assert list((corpus_settings.data_dir / "tmp").iterdir()) == []


# squeezenet1_1 (5 MB) rather than resnet18 (45 MB): the corpus's upload limit is 32 MB.
_SMALL = "squeezenet1_1"


def _small_p4(*, legacy: bool) -> bytes:
    """torch.save(model.state_dict(), f, pickle_protocol=4), zip or legacy format."""
    state = torchvision.models.get_model(_SMALL).state_dict()
    return _saved(state, pickle_protocol=4, _use_new_zipfile_serialization=not legacy)


def _imagenet_best_acc1() -> bytes:
    """pytorch/examples imagenet/main.py's save_checkpoint dict; best_acc1 a numpy scalar."""
    model = torchvision.models.get_model(_SMALL)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {
        "epoch": 90,
        "arch": _SMALL,
        "state_dict": model.state_dict(),
        "best_acc1": np.float64(69.76),
        "optimizer": optimizer.state_dict(),
    }
    return _saved(checkpoint)


def _dino_args() -> bytes:
    """DINO main_dino.py's save_dict, with its argparse.Namespace args."""
    student, teacher = torchvision.models.get_model(_SMALL), torchvision.models.get_model(_SMALL)
    args = argparse.Namespace(arch=_SMALL, out_dim=65536, lr=0.0005, seed=0)
    checkpoint = {
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": torch.optim.AdamW(student.parameters()).state_dict(),
        "epoch": 100,
        "args": args,
    }
    return _saved(checkpoint, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (lambda: _small_p4(legacy=False), []),
        (lambda: _small_p4(legacy=True), []),
        (_imagenet_best_acc1, ["numpy._core.multiarray.scalar", "numpy.dtype"]),
        (_dino_args, ["argparse.Namespace"]),
    ],
    ids=["protocol-4-zip", "protocol-4-legacy", "imagenet-numpy-best-acc1", "dino-args-legacy"],
)
def test_corpus_files_the_anchors_load_safely_load(
    checked_client: TestClient, build: Callable[[], bytes], allowed: list[str]
) -> None:
    options = {"merge": {}}
    check = post_bytes(
        checked_client, build(), architecture=f"torchvision:{_SMALL}", options=options
    )
    check = check.json()
    assert check["status"] == "succeeded", check
    report = checked_client.get(check["links"]["report"]).json()
    assert report["safety"]["refused_globals"] == []
    assert report["safety"]["allowed_globals"] == allowed
    assert report["summary"]["verdict"] == "compatible", report["summary"]
    merged = checked_client.get(check["links"]["merged"])
    assert merged.status_code == 200
