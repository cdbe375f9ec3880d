"""The nine scenarios of issue 3, end to end over HTTP: real architectures (random init) saved in
tmp, posted with ?wait=60, and the report read back from GET /v1/checks/{id}/report.

Scenarios 6 and 7 (reverse) use a plugin architecture (a GPT-2-style MLP with nn.Linear, and
its float16 twin) registered by a fake dist-info put on sys.path before the app (and so its
spawned worker) starts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.architectures import clear_caches
from app.config import Settings
from app.main import create_app
from app.readers.checkpoint import read_checkpoint
from tests.api.http_checks import succeeded_report
from tests.checkpoints import resnet18_state_dict, save_checkpoint
from tests.matching.truth import assert_message_agrees, facts_of_report

pytestmark = pytest.mark.slow

PLUGIN_MODULE = """\
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(512, 32)
        self.ln = torch.nn.LayerNorm(32)
        self.c_fc = torch.nn.Linear(32, 64)
        self.c_proj = torch.nn.Linear(64, 32)


def gpt_mlp(**kwargs):
    return MLP()


def half_mlp(**kwargs):
    return MLP().half()
"""

ENTRY_POINTS = """\
[ckpt_compat.architectures]
gpt_mlp = scenario_plugin:gpt_mlp
half_mlp = scenario_plugin:half_mlp
"""


@pytest.fixture(scope="module")
def client(
    api_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The app with the scenario plugin installed before its worker is spawned."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "scenario_plugin.py").write_text(PLUGIN_MODULE)
    dist_info = root / "scenario_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: scenario-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        clear_caches()
        with TestClient(create_app(api_settings)) as test_client:
            yield test_client
    sys.modules.pop("scenario_plugin", None)
    clear_caches()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenarios")


def _check(client: TestClient, path: Path, architecture: str, **options: Any) -> dict[str, Any]:
    result = succeeded_report(client, path, architecture, options)
    used = read_checkpoint(path, state_dict_key=result["checkpoint"]["state_dict_path"])
    assert_message_agrees(result["summary"]["message"], facts_of_report(result, used.index.keys()))
    return result


def _reasons(entries: list[dict[str, Any]]) -> dict[str, str]:
    return {e["key"]: e["reason"] for e in entries}


def _gpt_mlp_state(*, conv1d: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {
        "wte.weight": torch.randn(512, 32),
        "ln.weight": torch.ones(32),
        "ln.bias": torch.zeros(32),
        "c_fc.weight": torch.randn(64, 32),
        "c_fc.bias": torch.zeros(64),
        "c_proj.weight": torch.randn(32, 64),
        "c_proj.bias": torch.zeros(32),
    }
    if conv1d:  # GPT-2's Conv1D stores (in_features, out_features)
        for key in ("c_fc.weight", "c_proj.weight"):
            state[key] = state[key].t().contiguous()
    return state


# ---------------------------------------------------------------- 1. backbone into a detector


def test_scenario_1_resnet50_into_fasterrcnn_loads_the_backbone(
    client: TestClient, files: Path
) -> None:
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    path = save_checkpoint(
        {"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}},
        files / "r50.pth",
    )
    report = _check(client, path, "torchvision:fasterrcnn_resnet50_fpn")

    assert report["checkpoint"]["state_dict_path"] == "state_dict"
    assert report["applied_transforms"] == [
        {
            "kind": "strip_prefix",
            "prefix": "module.",
            "pattern": None,
            "replacement": None,
            "origin": "auto",
            "keys_changed": 320,
        },
        {
            "kind": "add_prefix",
            "prefix": "backbone.body.",
            "pattern": None,
            "replacement": None,
            "origin": "auto",
            "keys_changed": 320,
        },
    ]
    expected_body = {"backbone.body." + k for k in state if not k.startswith("fc.")}
    keys = report["keys"]
    assert set(keys["matched"]) == expected_body
    assert keys["shape_mismatched"] == [] and keys["dtype_differs"] == []
    assert {e["reason"] for e in keys["missing"]} == {"new_module"}
    assert {e["key"].split(".")[0] for e in keys["missing"]} == {"backbone", "rpn", "roi_heads"}
    assert all(not e["key"].startswith("backbone.body.") for e in keys["missing"])
    assert [(e["key"], e["aligned_key"], e["reason"]) for e in keys["unexpected"]] == [
        ("module.fc.weight", "backbone.body.fc.weight", "new_module"),
        ("module.fc.bias", "backbone.body.fc.bias", "new_module"),
    ]
    summary = report["summary"]
    assert summary["verdict"] == "compatible_with_changes"
    assert summary["loaded_parameter_count"] == 23_508_032
    assert summary["reasons"] == {"new_module": 32}
    assert summary["message"] == (
        "backbone.body loads fully (23.5 M parameters). backbone.fpn, rpn, roi_heads are new "
        "(18.3 M parameters): train them. The checkpoint's module.fc is not used by this model."
    )
    tops = {m["module"]: m for m in report["modules"]}
    assert [c["module"] for c in tops["backbone"]["children"]] == ["backbone.body", "backbone.fpn"]
    body = tops["backbone"]["children"][0]
    assert (body["status"], body["loaded_parameter_fraction"]) == ("loaded", 1.0)
    assert tops["rpn"]["status"] == tops["roi_heads"]["status"] == "not_loaded"
    plan = report["training_plan"]
    assert plan["mode"] == "loaded"
    assert all(not name.startswith("backbone.body.") for name in plan["trainable"])
    assert all(name.startswith("backbone.body.") for name in plan["frozen"])
    assert plan["trainable_parameter_count"] == 41_808_406 - 23_508_032
    assert [g["name"] for g in plan["optimizer_param_groups"]] == ["new", "new_no_decay"]
    assert any("BatchNorm" in note for note in plan["notes"])


# ---------------------------------------------------------------- 2. wrappers and prefixes


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (lambda s: {"_orig_mod." + k: v for k, v in s.items()}, "_orig_mod."),
        (lambda s: {"epoch": 1, "state_dict": {"model." + k: v for k, v in s.items()}}, "model."),
    ],
    ids=["torch_compile", "lightning"],
)
def test_scenario_2_compile_and_lightning_prefixes_are_stripped(
    client: TestClient, files: Path, wrap: Any, prefix: str
) -> None:
    path = save_checkpoint(wrap(resnet18_state_dict()), files / f"wrapped{len(prefix)}.pt")
    report = _check(client, path, "torchvision:resnet18")
    assert [(t["kind"], t["prefix"], t["keys_changed"]) for t in report["applied_transforms"]] == [
        ("strip_prefix", prefix, 122)
    ]
    assert report["summary"]["verdict"] == "compatible"
    assert report["summary"]["strict_loadable"] is False  # as stored, the prefix is still there
    loaded = report["summary"]["loaded_parameter_count"]
    assert all(a["loaded_parameter_count"] >= loaded / 2 for a in report["alternatives"])


def test_scenario_2_best_candidate_state_dict_is_used(client: TestClient, files: Path) -> None:
    full, ema = resnet18_state_dict(), resnet18_state_dict(num_classes=10)
    path = save_checkpoint({"state_dict": full, "state_dict_ema": ema}, files / "ema.pt")
    report = _check(client, path, "torchvision:resnet18")
    checkpoint = report["checkpoint"]
    assert checkpoint["state_dict_path"] == "state_dict"
    assert {c["path"]: c["loaded_parameter_count"] for c in checkpoint["candidates"]} == {
        "state_dict": 11_689_512,
        "state_dict_ema": 11_689_512 - 513_000,
    }
    assert checkpoint["state_dict_reason"] == (
        "Used 'state_dict', which loads the most parameter elements ('state_dict' loads "
        "11689512, 'state_dict_ema' loads 11176512)."
    )
    assert report["summary"]["verdict"] == "compatible"


# ---------------------------------------------------------------- 3-5. expected changes


def test_scenario_3_resnet18_with_ten_classes_has_a_resized_head(
    client: TestClient, resnet18_file: Path
) -> None:
    report = _check(
        client, resnet18_file, "torchvision:resnet18", architecture_kwargs={"num_classes": 10}
    )
    assert _reasons(report["keys"]["shape_mismatched"]) == {
        "fc.weight": "head_resized",
        "fc.bias": "head_resized",
    }
    assert report["keys"]["missing"] == [] and report["keys"]["unexpected"] == []
    assert report["summary"]["verdict"] == "compatible_with_changes"
    assert report["summary"]["message"] == (
        "Everything but fc loads (11.2 M parameters). The output layer fc is new because "
        "num_classes changed from 1000 to 10: train it."
    )
    assert report["training_plan"]["trainable"] == ["fc.weight", "fc.bias"]


def test_scenario_4_timm_resnet_with_one_input_channel(client: TestClient, files: Path) -> None:
    import timm

    torch.manual_seed(0)
    path = save_checkpoint(timm.create_model("resnet18").state_dict(), files / "timm_r18.pt")
    report = _check(client, path, "timm:resnet18", architecture_kwargs={"in_chans": 1})
    mismatched = report["keys"]["shape_mismatched"]
    assert [
        (m["key"], m["checkpoint_shape"], m["model_shape"], m["reason"]) for m in mismatched
    ] == [("conv1.weight", [64, 3, 7, 7], [64, 1, 7, 7], "input_channels")]
    assert "adapt_input_conv" in mismatched[0]["detail"]
    assert report["summary"]["verdict"] == "compatible_with_changes"
    assert report["training_plan"]["trainable"] == ["conv1.weight"]


def test_scenario_5_vit_at_384_has_a_resized_position_embedding(
    client: TestClient, files: Path
) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224")
    path = save_checkpoint(model.state_dict(), files / "vit.pt")
    report = _check(
        client, path, "timm:vit_tiny_patch16_224", architecture_kwargs={"img_size": 384}
    )
    mismatched = report["keys"]["shape_mismatched"]
    assert [
        (m["key"], m["checkpoint_shape"], m["model_shape"], m["reason"]) for m in mismatched
    ] == [("pos_embed", [1, 197, 192], [1, 577, 192], "position_embedding_resized")]
    assert report["summary"]["verdict"] == "compatible_with_changes"
    assert report["modules"][0]["module"] == ""  # cls_token and pos_embed sit on the model
    blocks = next(m for m in report["modules"] if m["module"] == "blocks")
    assert [(c["module"], c["repeat"], c["status"]) for c in blocks["children"]] == [
        ("blocks.{0..11}", 12, "loaded")
    ]


# ---------------------------------------------------------------- 6. Conv1D against Linear


def test_scenario_6_conv1d_weights_are_transposed(client: TestClient, files: Path) -> None:
    path = save_checkpoint(_gpt_mlp_state(conv1d=True), files / "gpt.pt")
    report = _check(client, path, "plugin:gpt_mlp", merge={"format": "pt"})
    assert _reasons(report["keys"]["shape_mismatched"]) == {
        "c_fc.weight": "transposed",
        "c_proj.weight": "transposed",
    }
    summary = report["summary"]
    assert summary["verdict"] == "partial"
    assert (
        "2 weights are stored transposed (Conv1D against Linear), e.g. c_fc.weight: transpose "
        "them before loading." in summary["message"]
    )
    assert summary["message"].endswith(  # the transpose adapter loads them: say so
        "suggested_options has options (adapt) that load 100.0% of the parameters "
        "(compatible): pass them as options to use them."
    )
    assert report["merged"]["loaded_keys"] == 5  # transposed tensors are not loaded
    assert report["merged"]["kept_keys"] == 2


# ---------------------------------------------------------------- 7. dtypes


def test_scenario_7_fp16_checkpoint_into_fp32_model_is_lossless(
    client: TestClient, files: Path
) -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in resnet18_state_dict().items()}
    report = _check(client, save_checkpoint(state, files / "half.pt"), "torchvision:resnet18")
    casts = report["keys"]["dtype_differs"]
    assert len(casts) == 102
    assert {(c["reason"], c["lossless"]) for c in casts} == {("dtype_cast", True)}
    assert casts[0]["detail"] == "Loads with a cast: float16 -> float32 is lossless."
    assert report["summary"]["verdict"] == "compatible"


def test_scenario_7_fp32_checkpoint_into_fp16_model_is_lossy(
    client: TestClient, files: Path
) -> None:
    path = save_checkpoint(_gpt_mlp_state(conv1d=False), files / "fp32.pt")
    report = _check(client, path, "plugin:half_mlp")
    casts = report["keys"]["dtype_differs"]
    assert {(c["reason"], c["lossless"]) for c in casts} == {("dtype_cast", False)}
    assert casts[0]["detail"] == "Loads with a cast: float32 -> float16 loses precision."
    assert report["summary"]["verdict"] == "compatible"
    assert "float32 -> float16, which loses precision" in report["summary"]["message"]


# ---------------------------------------------------------------- 8. old BatchNorm checkpoints


def test_scenario_8_missing_num_batches_tracked_is_ignorable(
    client: TestClient, files: Path
) -> None:
    state = {k: v for k, v in resnet18_state_dict().items() if "num_batches_tracked" not in k}
    report = _check(client, save_checkpoint(state, files / "old_bn.pt"), "torchvision:resnet18")
    missing = report["keys"]["missing"]
    assert len(missing) == 20
    assert {e["reason"] for e in missing} == {"ignorable"}
    assert report["summary"]["verdict"] == "compatible"
    assert report["summary"]["strict_loadable"] is False


# ---------------------------------------------------------------- 9. rename rules


def test_scenario_9_rename_rules_map_another_naming_fully(client: TestClient, files: Path) -> None:
    state = {
        k.replace("layer", "stage").replace("downsample", "shortcut"): v
        for k, v in resnet18_state_dict().items()
    }
    rules = [
        {"pattern": r"^stage(\d)\.", "replacement": r"layer\1."},
        {"pattern": r"\.shortcut\.", "replacement": ".downsample."},
    ]
    report = _check(
        client, save_checkpoint(state, files / "renamed.pt"), "torchvision:resnet18", rename=rules
    )
    assert [
        (t["kind"], t["pattern"], t["origin"], t["keys_changed"])
        for t in report["applied_transforms"]
    ] == [
        ("rename", r"^stage(\d)\.", "option", 114),
        ("rename", r"\.shortcut\.", "option", 18),
    ]
    assert report["summary"]["verdict"] == "compatible"
    assert report["summary"]["matched"] == 122
    assert "Explicit key options were given, so automatic alignment did not run." in report["notes"]


def test_scenario_9_rename_pattern_that_does_not_compile_is_422(
    client: TestClient, resnet18_file: Path
) -> None:
    with resnet18_file.open("rb") as handle:
        response = client.post(
            "/v1/checks",
            files={"file": ("r18.pth", handle, "application/octet-stream")},
            data={
                "architecture": "torchvision:resnet18",
                "options": json.dumps({"rename": [{"pattern": "(", "replacement": ""}]}),
            },
        )
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/invalid-options"
    assert "pattern '(' does not compile: missing )" in problem["detail"]


def test_scenario_2_merge_loads_the_aligned_tensors(client: TestClient, files: Path) -> None:
    import torchvision

    state = resnet18_state_dict(seed=3)
    path = save_checkpoint(
        {"state_dict": {"model." + k: v for k, v in state.items()}}, files / "merge.ckpt"
    )
    report = _check(client, path, "torchvision:resnet18", merge={"format": "pt"})
    assert report["merged"]["loaded_keys"] == 122
    response = client.get(f"/v1/checks/{report['check_id']}/merged")
    assert response.status_code == 200
    merged_path = files / "merged.pt"
    merged_path.write_bytes(response.content)
    merged = torch.load(merged_path, weights_only=True)
    torchvision.models.resnet18().load_state_dict(merged, strict=True)
    assert torch.equal(merged["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
