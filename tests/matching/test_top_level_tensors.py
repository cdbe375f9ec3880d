"""Top-level tensors (no module in their name) that only one side has.

MAE, BEiT and SimMIM pretraining save a ``mask_token`` and the decoder's ``decoder_pos_embed``
at the top of the state_dict; DeiT's distilled models a ``dist_token``; a ViT built without a
class token has no ``cls_token``. These belong to the root module, which both sides have, so
they were "unexplained" and a MAE encoder, which loads fully into a classifier but for the
head, came out ``partial``. Each is a tensor only one side has: not used (checkpoint side) or
new, train it (model side), unless a same-shaped top-level tensor on the other side could be
its renamed twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.architectures.registry import describe
from app.matching.analysis import Analysis
from app.matching.report import build_report
from app.schemas import Reason, Verdict
from tests.matching.projects import run_check

timm = pytest.importorskip("timm")


def mae_pretrain(embed_dim: int = 192, decoder_dim: int = 128) -> dict[str, Any]:
    """facebookresearch/mae ``models_mae.py`` (``MaskedAutoencoderViT``) as ``main_pretrain.py``
    saves it (``misc.save_model``: ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``): the
    encoder named as timm's ViT (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``,
    ``norm``; no head), then ``mask_token``, ``decoder_embed``, ``decoder_pos_embed``,
    ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``. timm's blocks stand in for MAE's,
    which are timm's ``Block``."""
    with torch.device("meta"):
        encoder = timm.create_model("vit_tiny_patch16_224", num_classes=0)
        decoder = timm.create_model(
            "vit_tiny_patch16_224", embed_dim=decoder_dim, depth=2, num_heads=4, num_classes=0
        )
    state: dict[str, torch.Tensor] = {
        k: torch.zeros(v.shape) for k, v in encoder.state_dict().items() if k != "norm.weight"
    }
    state["norm.weight"] = torch.ones(embed_dim)
    state["mask_token"] = torch.zeros(1, 1, decoder_dim)
    state["decoder_embed.weight"] = torch.zeros(decoder_dim, embed_dim)
    state["decoder_embed.bias"] = torch.zeros(decoder_dim)
    state["decoder_pos_embed"] = torch.zeros(1, 197, decoder_dim)
    for key, value in decoder.blocks.state_dict().items():
        state[f"decoder_blocks.{key}"] = torch.zeros(value.shape)
    state["decoder_norm.weight"] = torch.ones(decoder_dim)
    state["decoder_norm.bias"] = torch.zeros(decoder_dim)
    state["decoder_pred.weight"] = torch.zeros(16 * 16 * 3, decoder_dim)
    state["decoder_pred.bias"] = torch.zeros(16 * 16 * 3)
    return {"model": state, "optimizer": {}, "epoch": 799, "scaler": {}, "args": None}


def _report(analysis: Analysis) -> dict[str, Any]:
    report: dict[str, Any] = build_report(
        check_id="c", filename="f.pth", sha256="0" * 64, size_bytes=1, analysis=analysis,
        architecture=describe("timm:vit_tiny_patch16_224", {}),
    )  # fmt: skip
    return report


def test_mae_pretrain_encoder_into_a_vit_classifier_trains_only_the_head(tmp_path: Path) -> None:
    analysis = run_check(mae_pretrain(), tmp_path / "mae.pth", "timm:vit_tiny_patch16_224")
    summary = _report(analysis)["summary"]
    assert summary["verdict"] == Verdict.COMPATIBLE_WITH_CHANGES, summary["message"]
    assert Reason.UNEXPLAINED not in summary["reasons"]
    assert "head is new" in summary["message"]
    assert "mask_token" in summary["message"] and "decoder_pos_embed" in summary["message"]
    explained = analysis.explanations.unexpected
    assert explained["mask_token"].reason is Reason.NEW_MODULE
    assert "only in the checkpoint" in explained["mask_token"].detail


def test_a_model_s_own_class_token_is_new_when_the_checkpoint_has_none(tmp_path: Path) -> None:
    with torch.device("meta"):
        source = timm.create_model("vit_tiny_patch16_224", class_token=False, global_pool="avg")
    state = {k: torch.zeros(v.shape) for k, v in source.state_dict().items()}
    analysis = run_check(state, tmp_path / "nocls.pth", "timm:vit_tiny_patch16_224")
    missing = analysis.explanations.missing
    assert missing["cls_token"].reason is Reason.NEW_MODULE
    assert "cls_token" in analysis.explanations.new_modules
    report = _report(analysis)
    assert "cls_token is new (192 parameters)" in report["summary"]["message"]
    assert "cls_token" in report["training_plan"]["trainable"]


def test_a_same_shaped_top_level_tensor_on_the_other_side_stays_unexplained(
    tmp_path: Path,
) -> None:
    # "class_token" could be the model's "cls_token" under another name: not called unused.
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_224")
    state = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    state["class_token"] = state.pop("cls_token")
    analysis = run_check(state, tmp_path / "renamed.pth", "timm:vit_tiny_patch16_224")
    assert "class_token" not in analysis.explanations.checkpoint_only_modules
    assert "cls_token" not in analysis.explanations.new_modules
    explained = analysis.explanations.missing.get("cls_token")
    # Structural pairing gives it its name, or it stays a question: never "new" and "unused".
    assert explained is None or explained.reason is not Reason.NEW_MODULE
