"""Issue 12's done-when, end to end: files saved the transformers 4.x way load into their
transformers 5 architectures as ``from_pretrained`` loads them (same outputs).

Each checkpoint is random and laid out with transformers 4.x's names, then posted to the
service (API and a real worker process) with a merge; the merged file is loaded strictly into
the transformers 5 class built from the same config and its outputs compared with
``from_pretrained`` on the very directory (config.json + model.safetensors) the file came from.

The 4.x layouts follow transformers 4.x's modeling code:
- Mixtral (``models/mixtral/modeling_mixtral.py``, v4.36-v4.57): ``MixtralDecoderLayer``
  holds ``block_sparse_moe = MixtralSparseMoeBlock`` with ``gate = nn.Linear(hidden,
  num_local_experts)`` and ``experts = nn.ModuleList`` of ``MixtralBlockSparseTop2MLP`` (``w1``,
  ``w3``: hidden -> intermediate, ``w2``: intermediate -> hidden), so keys read
  ``model.layers.N.block_sparse_moe.experts.E.w1.weight``.
- Qwen2-MoE (``models/qwen2_moe/modeling_qwen2_moe.py``, v4.40-v4.57): ``mlp =
  Qwen2MoeSparseMoeBlock`` with ``gate``, ``experts = nn.ModuleList`` of ``Qwen2MoeMLP``
  (``gate_proj``, ``up_proj``, ``down_proj``), ``shared_expert`` and ``shared_expert_gate``:
  ``model.layers.N.mlp.experts.E.gate_proj.weight``.
- ViT (``models/vit/modeling_vit.py``, v4.x): ``encoder.layer.N.attention.attention.query``,
  ``attention.output.dense``, ``intermediate.dense``, ``output.dense``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load, save_file

from app.config import Settings
from app.main import create_app

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

MIXTRAL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 24,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
}
QWEN2_MOE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "moe_intermediate_size": 16,
    "shared_expert_intermediate_size": 24,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
}
VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
}
VIT_4X = (
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path_factory.mktemp("data"),
            "workers": 1,
            "check_timeout_seconds": 300,
        }
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _random(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * 0.2


def _experts_4x(
    model: torch.nn.Module,
    rename: Callable[[str], str],
    parts: dict[str, str],
) -> dict[str, torch.Tensor]:
    """The model's non-expert tensors (renamed) and random per-expert ``nn.Linear`` weights:
    ``parts`` maps a 4.x expert module (``w1``) to its shape's source (``gate`` / ``down``)."""
    generator = torch.Generator().manual_seed(3)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".experts." in key:
            continue
        state[rename(key)] = _random(tuple(value.shape), generator)
    config: Any = model.config
    experts = getattr(config, "num_local_experts", None) or config.num_experts
    inner = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    hidden = config.hidden_size
    for layer in range(config.num_hidden_layers):
        for expert in range(experts):
            for name, kind in parts.items():
                shape = (inner, hidden) if kind == "gate" else (hidden, inner)
                prefix = rename(f"model.layers.{layer}.mlp.experts")
                state[f"{prefix}.{expert}.{name}.weight"] = _random(shape, generator)
    return state


def _mixtral_4x(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return _experts_4x(
        model,
        lambda k: k.replace(".mlp.", ".block_sparse_moe."),
        {"w1": "gate", "w2": "down", "w3": "gate"},
    )


def _qwen2_moe_4x(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return _experts_4x(
        model, lambda k: k, {"gate_proj": "gate", "up_proj": "gate", "down_proj": "down"}
    )


def _vit_4x(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in VIT_4X:
            key = re.sub(pattern, replacement, key)
        state[key] = _random(tuple(value.shape), generator)
    return state


CASES = {
    "mixtral": (MIXTRAL, "AutoModelForCausalLM", _mixtral_4x),
    "qwen2_moe": (QWEN2_MOE, "AutoModelForCausalLM", _qwen2_moe_4x),
    "vit": (VIT, "AutoModel", _vit_4x),
}


def _save_4x(name: str, directory: Path) -> None:
    fields, auto_class, layout = CASES[name]
    config = transformers.CONFIG_MAPPING[name].from_dict(dict(fields))
    model = getattr(transformers, auto_class).from_config(config)
    config.save_pretrained(directory)
    save_file(layout(model), directory / "model.safetensors", metadata={"format": "pt"})


def _outputs(model: torch.nn.Module, name: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        if name == "vit":
            pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
            out: torch.Tensor = model(pixel_values=pixels).last_hidden_state
            return out
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
        logits: torch.Tensor = model(input_ids=ids).logits
        return logits


def _check(client: TestClient, path: Path, name: str) -> tuple[dict[str, Any], bytes]:
    fields, auto_class, _ = CASES[name]
    options = {"architecture_kwargs": {**fields, "auto_class": auto_class}, "merge": {}}
    with path.open("rb") as handle:
        response = client.post(
            "/v1/checks",
            params={"wait": 60},
            data={"architecture": f"transformers:{name}", "options": json.dumps(options)},
            files={"file": (path.name, handle)},
        )
    assert response.status_code in (200, 202), response.text
    check = response.json()
    for _ in range(10):  # a busy machine: wait on, 60 s at a time
        if check["status"] not in ("queued", "running"):
            break
        check = client.get(f"/v1/checks/{check['id']}", params={"wait": 60}).json()
    assert check["status"] == "succeeded", check["error"]
    report = client.get(f"/v1/checks/{check['id']}/report").json()
    merged = client.get(check["links"]["merged"])
    assert merged.status_code == 200, merged.text
    return report, merged.content


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "vit"])
def test_transformers_4x_file_merges_to_what_from_pretrained_loads(
    client: TestClient, tmp_path: Path, name: str
) -> None:
    _save_4x(name, tmp_path)
    report, merged = _check(client, tmp_path / "model.safetensors", name)
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    assert report["summary"]["verdict"] == "compatible", report["summary"]["message"]
    assert "conversion" in {t["kind"] for t in report["applied_transforms"]}
    fused = [a for a in report["keys"]["adapted"] if a["adapter"] == "conversion"]
    if name == "vit":
        assert not fused  # renamings only: every key loads as stored, under a new name
    else:
        layers = CASES[name][0]["num_hidden_layers"]
        assert len(fused) == 2 * layers  # gate_up_proj and down_proj per layer
        assert all(len(a["checkpoint_keys"]) in (4, 8) for a in fused)
        assert not report["keys"]["unexpected"]
    _, auto_class, _ = CASES[name]
    cls = getattr(transformers, auto_class)
    reference = cls.from_pretrained(tmp_path)
    target = cls.from_config(transformers.AutoConfig.from_pretrained(tmp_path))
    target.load_state_dict(load(merged), strict=True)
    want, got = _outputs(reference, name), _outputs(target, name)
    assert torch.allclose(want, got, atol=1e-5, rtol=1e-5), (want - got).abs().max()
    state = reference.state_dict()
    for key, value in load(merged).items():
        assert torch.equal(value, state[key]), key


def test_openai_clip_visual_merges_through_timm_filter(client: TestClient, tmp_path: Path) -> None:
    """The worker traces timm's checkpoint_filter_fn for a timm architecture (OpenAI CLIP's
    layout, tests/merge/test_timm_filters.py) and merges what timm's loading gives."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    from tests.merge.test_timm_filters import CLIP, CLIP_KWARGS, SIZE, _clip_state

    state = _clip_state()
    path = tmp_path / "clip.safetensors"
    save_file(state, path)
    options = {"architecture_kwargs": CLIP_KWARGS, "merge": {}}
    with path.open("rb") as handle:
        response = client.post(
            "/v1/checks",
            params={"wait": 60},
            data={"architecture": f"timm:{CLIP}", "options": json.dumps(options)},
            files={"file": (path.name, handle)},
        )
    check = response.json()
    for _ in range(10):
        if check["status"] not in ("queued", "running"):
            break
        check = client.get(f"/v1/checks/{check['id']}", params={"wait": 60}).json()
    assert check["status"] == "succeeded", check["error"]
    report = client.get(f"/v1/checks/{check['id']}/report").json()
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    (step,) = report["applied_transforms"]
    assert step["kind"] == "conversion" and step["pattern"].endswith("checkpoint_filter_fn")
    adapted = {a["key"]: a for a in report["keys"]["adapted"]}
    assert adapted["head.weight"]["checkpoint_keys"] == ["visual.proj"]
    assert adapted["head.weight"]["adapter"] == "conversion"
    merged = load(client.get(check["links"]["merged"]).content)
    reference = timm.create_model(CLIP, pretrained=False, **CLIP_KWARGS).eval()
    reference.load_state_dict(checkpoint_filter_fn(dict(state), reference))  # type: ignore[arg-type]
    model = timm.create_model(CLIP, pretrained=False, **CLIP_KWARGS).eval()
    model.load_state_dict(merged, strict=True)
    pixels = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(pixels), reference(pixels))
