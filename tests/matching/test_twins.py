"""Tests of app.matching.twins: twin encoders and EMA copies chosen by the projects' own
conventions (issue 10, defects 1 and 9), on checkpoints laid out as those projects save them."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
import torchvision

import app.matching.twins as twins_module
from app.matching.twins import choose_twin
from app.schemas import Verdict
from tests.checkpoints import resnet18_state_dict
from tests.matching import projects
from tests.matching.truth import assert_message_agrees, facts_of_analysis


def test_choose_twin_docstring_example_runs() -> None:
    assert doctest.testmod(twins_module).failed == 0


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["module.encoder_k.", "module.encoder_q."], "module.encoder_q."),
        (["module.momentum_encoder.", "module.base_encoder."], "module.base_encoder."),
        (["student", "teacher"], "teacher"),
        (["target_encoder.net.", "online_encoder.net."], "online_encoder.net."),
        (["params", "params_ema"], "params_ema"),
        (["model", "ema"], "ema"),
        (["state_dict", "model_ema"], "model_ema"),
        (["model.", "model_ema.module."], "model_ema.module."),
        (["online_model.", "ema_model."], "ema_model."),
    ],
)
def test_choose_twin_follows_the_projects_conventions(names: list[str], chosen: str) -> None:
    choice = choose_twin(names, option="strip_prefix")
    assert choice.chosen == chosen
    assert choice.settled


def test_choose_twin_without_a_convention_is_unsettled_and_names_each_option() -> None:
    choice = choose_twin(["net_a.", "net_b."], option="strip_prefix")
    assert not choice.settled
    assert "strip_prefix 'net_a.' or strip_prefix 'net_b.'" in choice.sentence()


def test_moco_v2_into_resnet50_uses_the_query_encoder(tmp_path: Path) -> None:
    analysis = projects.run_check(
        projects.moco_v2("resnet50"), tmp_path / "moco_v2.pth.tar", "torchvision:resnet50"
    )
    assert [s.transform.describe() for s in analysis.alignment.steps] == [
        "strip 'module.encoder_q.'"
    ]
    assert analysis.key_map["layer4.2.conv3.weight"] == "module.encoder_q.layer4.2.conv3.weight"
    twins = analysis.alignment.twins
    assert twins is not None and twins.settled and twins.others == ("module.encoder_k.",)
    assert "MoCo evaluates the query encoder" in analysis.message
    assert any("MoCo evaluates the query encoder" in n for n in analysis.alignment.notes)
    assert "The checkpoint's module " not in analysis.message
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_moco_v2_merge_holds_the_query_encoder(tmp_path: Path) -> None:
    obj = projects.moco_v2("resnet18", meta=False)
    path = tmp_path / "moco_v2_r18.pth.tar"
    analysis = projects.run_check(obj, path, "torchvision:resnet18")
    merged = projects.merge(path, analysis, torchvision.models.resnet18)
    state = obj["state_dict"]
    # MoCo copies encoder_q into encoder_k at start; after training they differ, as here.
    for key in ("conv1.weight", "layer3.1.conv1.weight", "layer4.1.conv2.weight"):
        assert torch.equal(merged[key], state["module.encoder_q." + key]), key
        assert not torch.equal(merged[key], state["module.encoder_k." + key]), key


def test_moco_v3_uses_the_base_encoder(tmp_path: Path) -> None:
    analysis = projects.run_check(
        projects.moco_v3(), tmp_path / "v3.pth.tar", "torchvision:resnet50"
    )
    assert analysis.key_map["conv1.weight"] == "module.base_encoder.conv1.weight"
    assert "MoCo v3 evaluates the base encoder" in analysis.message
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_dino_uses_the_teacher_and_says_why(tmp_path: Path) -> None:
    analysis = projects.run_check(
        projects.dino_resnet(), tmp_path / "dino.pth", "torchvision:resnet50"
    )
    assert analysis.checkpoint.state_dict_path == "teacher"
    assert "DINO evaluates (and releases) the teacher" in analysis.state_dict_reason
    assert "DINO evaluates (and releases) the teacher" in analysis.message
    assert analysis.state_dict_reason in analysis.checkpoint.notes
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_twins_no_convention_settles_make_the_verdict_partial(tmp_path: Path) -> None:
    state = resnet18_state_dict()
    obj = {"state_dict": {p + k: v for p in ("net_a.", "net_b.") for k, v in state.items()}}
    analysis = projects.run_check(obj, tmp_path / "two.pt", "torchvision:resnet18")
    assert analysis.verdict is Verdict.PARTIAL
    assert "strip_prefix 'net_a.' or strip_prefix 'net_b.'" in analysis.message
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_twin_candidates_no_convention_settles_name_state_dict_key(tmp_path: Path) -> None:
    state = resnet18_state_dict()
    obj = {"generator_a": state, "generator_b": dict(state)}
    analysis = projects.run_check(obj, tmp_path / "ab.pt", "torchvision:resnet18")
    assert analysis.verdict is Verdict.PARTIAL
    assert "state_dict_key 'generator_a' or state_dict_key 'generator_b'" in analysis.message


# ---------------------------------------------------------------- EMA copies (defect 9)


def test_basicsr_params_ema_wins_over_params(tmp_path: Path) -> None:
    with torch.device("meta"):
        obj = projects.basicsr(torchvision.models.resnet18(), torchvision.models.resnet18())
    analysis = projects.run_check(obj, tmp_path / "net_g_5000.pth", "torchvision:resnet18")
    assert analysis.checkpoint.state_dict_path == "params_ema"
    assert "BasicSR" in analysis.state_dict_reason
    assert "moving average" in analysis.message
    assert analysis.verdict is Verdict.COMPATIBLE


def test_ema_pytorch_trainer_layout_uses_the_ema_model(tmp_path: Path) -> None:
    """lucidrains/denoising-diffusion-pytorch ``Trainer.save``: ``{'step', 'model', 'opt',
    'ema': EMA(model).state_dict(), 'scaler', 'version'}``; ema-pytorch's ``EMA`` holds the
    average in ``ema_model`` next to its ``initted`` and ``step`` buffers."""
    with torch.device("meta"):
        model, average = torchvision.models.resnet18(), torchvision.models.resnet18()
    ema = {"initted": torch.tensor(True), "step": torch.tensor(5000)}
    ema |= {"ema_model." + k: v for k, v in average.state_dict().items()}
    obj = {"step": 5000, "model": model.state_dict(), "opt": {}, "ema": ema, "version": "2.0"}
    analysis = projects.run_check(obj, tmp_path / "model-5.pt", "torchvision:resnet18")
    assert analysis.checkpoint.state_dict_path == "ema"
    assert analysis.key_map["fc.weight"] == "ema_model.fc.weight"
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_yolox_layout_says_model_holds_the_ema_weights(tmp_path: Path) -> None:
    """Megvii-BaseDetection/YOLOX ``Trainer.save_ckpt`` saves ``self.ema_model.ema`` (when EMA
    is on) under ``model``; a torchvision class stands in for the YOLOX network."""
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    obj = {"start_epoch": 300, "model": model.state_dict(), "optimizer": {}, "best_ap": 40.5}
    analysis = projects.run_check(obj, tmp_path / "best_ckpt.pth", "torchvision:resnet18")
    assert any("YOLOX" in n and "EMA weights" in n for n in analysis.checkpoint.notes)
