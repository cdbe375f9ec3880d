"""Issue 12: ``suggested_options`` proposes ``adapt`` when an adapter loads what the options leave,
and the suggestion, pasted into a new check over HTTP, merges what timm's own helpers give.

Real layouts: GPT-2 written by transformers' ``save_pretrained`` (Conv1D weights stored
(in, out)) into a plugin architecture that is the same GPT-2 with ``nn.Linear`` layers; a timm
ResNet into the same ResNet with a 4-channel stem; a timm ViT into the same ViT at another
image size. The app runs with its lifespan and a real spawned worker.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file
from timm.layers.pos_embed import resample_abs_pos_embed
from timm.models import adapt_input_conv

from app.architectures import clear_caches
from app.main import create_app
from tests.api.conftest import make_settings
from tests.api.http_checks import succeeded_report

pytestmark = pytest.mark.slow

GPT2_CONFIG = {
    "n_layer": 3,
    "n_embd": 32,
    "n_head": 2,
    "n_positions": 16,
    "vocab_size": 64,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

PLUGIN_MODULE = f"""\
import torch
from transformers import GPT2Config, GPT2Model
from transformers.pytorch_utils import Conv1D


def gpt2_linear(**kwargs):
    \"\"\"GPT-2 with every Conv1D replaced by the nn.Linear that computes the same.\"\"\"
    model = GPT2Model(GPT2Config(**{GPT2_CONFIG!r}))
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            parent, _, leaf = name.rpartition(".")
            inputs, outputs = module.weight.shape
            setattr(model.get_submodule(parent), leaf, torch.nn.Linear(inputs, outputs))
    return model
"""

ENTRY_POINTS = "[ckpt_compat.architectures]\ngpt2_linear = adapt_plugin:gpt2_linear\n"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app, with the plugin installed before its worker is spawned."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "adapt_plugin.py").write_text(PLUGIN_MODULE)
    dist_info = root / "adapt_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: adapt-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    settings = make_settings(tmp_path_factory.mktemp("data"), max_upload_bytes=100 * 1024 * 1024)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        clear_caches()
        with TestClient(create_app(settings)) as test_client:
            yield test_client
    sys.modules.pop("adapt_plugin", None)
    clear_caches()


def _check(client: TestClient, path: Path, architecture: str, options: dict[str, Any]) -> Any:
    return succeeded_report(client, path, architecture, options)


def _suggested_then_merged(
    client: TestClient, path: Path, architecture: str, options: dict[str, Any], adapt: list[str]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Check with ``options``, paste the one suggestion into a merge, return it and the file."""
    first = _check(client, path, architecture, options)
    assert first["summary"]["loaded_parameter_fraction"] < 1.0
    [suggestion] = first["suggested_options"]
    assert suggestion["options"]["adapt"] == adapt
    assert suggestion["loaded_parameter_fraction"] == 1.0
    assert suggestion["verdict"] == "compatible"
    pasted = {**suggestion["options"], "merge": {"format": "safetensors"}}
    report = _check(client, path, architecture, pasted)
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    assert report["summary"]["verdict"] == suggestion["verdict"]
    response = client.get(f"/v1/checks/{report['check_id']}/merged")
    assert response.status_code == 200
    out = path.with_suffix(".merged.safetensors")
    out.write_bytes(response.content)
    return report, load_file(out)


def test_gpt2_conv1d_into_linear_gpt2_suggests_transpose_and_computes_the_same(
    client: TestClient, tmp_path: Path
) -> None:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    source = GPT2Model(GPT2Config(**GPT2_CONFIG)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(std=0.2)  # Conv1D's biases start at zero and would hide a wrong layout
    source.save_pretrained(tmp_path)
    report, merged = _suggested_then_merged(
        client, tmp_path / "model.safetensors", "plugin:gpt2_linear", {}, ["transpose"]
    )
    adapted = {e["key"] for e in report["keys"]["adapted"]}
    assert "h.0.attn.c_proj.weight" in adapted  # square, transposed as its block says
    assert len(adapted) == 4 * GPT2_CONFIG["n_layer"]
    from adapt_plugin import gpt2_linear  # type: ignore[import-not-found]

    target = gpt2_linear().eval()
    target.load_state_dict(merged, strict=True)
    ids = torch.randint(0, GPT2_CONFIG["vocab_size"], (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(
            target(ids).last_hidden_state, source(ids).last_hidden_state, atol=1e-5, rtol=1e-4
        )


def test_timm_resnet_into_a_4_channel_stem_suggests_input_channels(
    client: TestClient, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    state = timm.create_model("resnet10t").state_dict()
    path = tmp_path / "resnet10t.pt"
    torch.save(state, path)
    kwargs = {"in_chans": 4}
    report, merged = _suggested_then_merged(
        client, path, "timm:resnet10t", {"architecture_kwargs": kwargs}, ["input_channels"]
    )
    assert [e["key"] for e in report["keys"]["adapted"]] == ["conv1.0.weight"]
    expected = adapt_input_conv(4, state["conv1.0.weight"].clone())
    assert torch.equal(merged["conv1.0.weight"], expected)
    model = timm.create_model("resnet10t", **kwargs).eval()  # type: ignore[arg-type]
    model.load_state_dict(merged, strict=True)
    reference = timm.create_model("resnet10t", **kwargs).eval()  # type: ignore[arg-type]
    reference.load_state_dict({**state, "conv1.0.weight": expected}, strict=True)
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_timm_vit_at_another_image_size_suggests_position_embedding(
    client: TestClient, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", depth=3).state_dict()
    path = tmp_path / "vit.pt"
    torch.save(state, path)
    kwargs = {"depth": 3, "img_size": 96}
    report, merged = _suggested_then_merged(
        client, path, "timm:vit_tiny_patch16_224", {"architecture_kwargs": kwargs}, [
            "position_embedding"
        ]
    )  # fmt: skip
    assert [e["key"] for e in report["keys"]["adapted"]] == ["pos_embed"]
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=[6, 6], num_prefix_tokens=1)
    assert torch.equal(merged["pos_embed"], expected)
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()  # type: ignore[arg-type]
    own = checkpoint_filter_fn(dict(state), model)  # timm's own loading path
    assert torch.equal(merged["pos_embed"], own["pos_embed"])
    model.load_state_dict(merged, strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        got = model(x)
        model.load_state_dict(own, strict=True)
        torch.testing.assert_close(got, model(x))
