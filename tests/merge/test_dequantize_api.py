"""The dequantize adapter end to end: a quantized checkpoint posted over HTTP, checked and merged
by a real worker process, the merged file downloaded and run.

The files are the tools' own (see tests/merge/test_dequantize.py): transformers + bitsandbytes
``save_pretrained`` of an LLM.int8 Llama, and transformers' ``Fp8Quantize`` output with its
``quantization_config``. The merged model's outputs are compared with the library-dequantized
model's: bitsandbytes' ``int8_vectorwise_dequant`` weights, and transformers loading the FP8
checkpoint on this CPU (it dequantizes, having no FP8 support).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app.main import create_app
from tests.api.conftest import make_settings
from tests.api.http_checks import succeeded_report
from tests.merge.test_dequantize import (
    ARCH,
    LINEARS,
    _bnb_dequantized,
    _bnb_file,
    _fp8_file,
    _kwargs,
    _llama,
    _logits,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*kernels.*:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:bitsandbytes.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:bitsandbytes.*"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("data"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _check(client: TestClient, path: Path, **options: Any) -> dict[str, Any]:
    return succeeded_report(client, path, ARCH, options)


def _merged(client: TestClient, report: dict[str, Any], out: Path) -> dict[str, torch.Tensor]:
    response = client.get(f"/v1/checks/{report['check_id']}/merged")
    assert response.status_code == 200
    out.write_bytes(response.content)
    return load_file(out)


def _assert_adapted(report: dict[str, Any], scheme_words: str) -> None:
    assert report["summary"]["verdict"] == "compatible"
    keys = report["keys"]
    adapted = {a["key"]: a for a in keys["adapted"]}
    assert list(adapted) == [f"{m}.weight" for m in LINEARS]
    assert {a["adapter"] for a in adapted.values()} == {"dequantize"}
    assert all(scheme_words in a["detail"] for a in adapted.values())
    assert set(adapted) <= set(keys["matched"])
    assert keys["missing"] == [] and keys["unexpected"] == []
    assert report["merged"]["loaded_keys"] == 21


def test_dequantize_api_bnb_int8_merge_runs_as_bitsandbytes_dequantized(
    client: TestClient, tmp_path: Path
) -> None:
    path = _bnb_file(tmp_path, load_in_8bit=True)
    plain = _check(client, path, architecture_kwargs=_kwargs())
    reasons = {m["key"]: m["reason"] for m in plain["keys"]["missing"]}
    assert reasons == {f"{m}.weight": "quantized" for m in LINEARS}
    suggested = [s["options"] for s in plain["suggested_options"]]
    assert [s["adapt"] for s in suggested] == [["dequantize"]]

    report = _check(
        client,
        path,
        architecture_kwargs=_kwargs(),
        adapt=["dequantize"],
        merge={"format": "safetensors"},
    )
    _assert_adapted(report, "int8_vectorwise_dequant")
    merged = _merged(client, report, tmp_path / "merged.safetensors")
    library = load_file(path) | _bnb_dequantized(path, torch.float32)
    library = {k: v.to(torch.float32) for k, v in library.items() if k in merged}
    torch.testing.assert_close(
        _logits(merged, torch.float32), _logits(library, torch.float32), rtol=1e-5, atol=1e-5
    )
    # And far from the float model it was quantized from only by the quantization error.
    original = {k: v for k, v in _llama().state_dict().items()}
    error = (_logits(merged, torch.float32) - _logits(original, torch.float32)).abs().max()
    assert error < 0.01


def test_dequantize_api_fp8_merge_runs_as_transformers_loads_it(
    client: TestClient, tmp_path: Path
) -> None:
    path = _fp8_file(tmp_path / "fp8", weight_block_size=[16, 16])
    report = _check(
        client,
        path,
        architecture_kwargs=_kwargs("bfloat16"),
        adapt=["dequantize"],
        merge={"format": "safetensors"},
    )
    _assert_adapted(report, "Fp8Dequantize")
    merged = _merged(client, report, tmp_path / "merged.safetensors")
    library = transformers.AutoModelForCausalLM.from_pretrained(path.parent, device_map="cpu")
    expected = {k: v.detach() for k, v in library.state_dict().items()}
    torch.testing.assert_close(
        _logits(merged, torch.bfloat16), _logits(expected, torch.bfloat16), rtol=0, atol=0
    )
