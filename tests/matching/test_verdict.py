"""Tests of app.matching.verdict."""

from __future__ import annotations

from pathlib import Path

import torch

from app.matching.compare import compare
from app.matching.placement import place
from app.matching.reasons import explain
from app.matching.verdict import MIN_LOADED_SHARE, Weakness, decide_verdict, find_weakness
from app.schemas import Verdict
from app.tensors import TensorIndex
from tests.checkpoints import save_checkpoint
from tests.matching.helpers import B, ckpt_of, model_of
from tests.matching.scenarios import analyse_file


def _verdict(ckpt: TensorIndex, model: TensorIndex) -> Verdict:
    result = compare(ckpt, model)
    why = explain(result, checkpoint=ckpt, model=model, sources={k: k for k in ckpt.tensors})
    return decide_verdict(result, why)


MODEL = model_of(
    ("body.w", (100,)), ("body.num_batches_tracked", (), B), ("fc.w", (10, 4)), ("fc.b", (10,))
)


def test_decide_verdict_compatible_apart_from_ignorable() -> None:
    assert (
        _verdict(ckpt_of(("body.w", (100,)), ("fc.w", (10, 4)), ("fc.b", (10,))), MODEL)
        is Verdict.COMPATIBLE
    )


def test_decide_verdict_compatible_with_changes_for_a_resized_head() -> None:
    ckpt = ckpt_of(("body.w", (100,)), ("fc.w", (5, 4)), ("fc.b", (5,)))
    assert _verdict(ckpt, MODEL) is Verdict.COMPATIBLE_WITH_CHANGES


def test_decide_verdict_partial_for_unexplained() -> None:
    ckpt = ckpt_of(("body.w", (100,)), ("fc.w", (10, 4)))
    assert _verdict(ckpt, MODEL) is Verdict.PARTIAL


def test_decide_verdict_incompatible_under_the_share() -> None:
    assert MIN_LOADED_SHARE == 0.1
    model = model_of(("body.w", (1000,)), ("fc.w", (10, 4)), ("fc.b", (10,)))
    ckpt = ckpt_of(("fc.w", (10, 4)), ("fc.b", (10,)))  # 50 of 1050 elements
    assert _verdict(ckpt, model) is Verdict.INCOMPATIBLE


def test_decide_verdict_nothing_loaded_is_never_compatible() -> None:
    model = model_of(("num_batches_tracked", (), B))
    assert _verdict(ckpt_of(("other", (1,))), model) is Verdict.INCOMPATIBLE


# ----------------------------------------------- where the loaded parameters sit (defect 3)


def _placed_verdict(
    ckpt: TensorIndex, model: TensorIndex, heads: tuple[str, ...]
) -> tuple[Verdict, Weakness | None]:
    result = compare(ckpt, model)
    why = explain(result, checkpoint=ckpt, model=model, sources={k: k for k in ckpt.tensors})
    placement = place(result, why, model=model, heads=heads)
    return decide_verdict(result, why, placement), find_weakness(placement)


def test_decide_verdict_a_loaded_head_on_a_random_backbone_is_incompatible() -> None:
    model = model_of(("body.a.w", (300,)), ("body.b.w", (300,)), ("fc.w", (100, 4)))
    verdict, weakness = _placed_verdict(ckpt_of(("fc.w", (100, 4))), model, ("fc",))
    assert (verdict, weakness) == (Verdict.INCOMPATIBLE, Weakness.BACKBONE_NOT_LOADED)


def test_decide_verdict_a_mostly_new_backbone_is_partial() -> None:
    model = model_of(("stem.w", (40,)), ("body.w", (60,)), ("fc.w", (10,)))
    verdict, weakness = _placed_verdict(ckpt_of(("stem.w", (40,)), ("fc.w", (10,))), model, ("fc",))
    assert (verdict, weakness) == (Verdict.PARTIAL, Weakness.BACKBONE_MOSTLY_NEW)


def test_decide_verdict_a_load_carried_by_one_module_is_partial() -> None:
    model = model_of(
        ("embed.w", (60,)), ("block.a.w", (15,)), ("block.b.w", (15,)), ("fc.w", (10,))
    )
    ckpt = ckpt_of(("embed.w", (60,)), ("block.x.w", (15,)), ("block.y.w", (15,)))
    verdict, weakness = _placed_verdict(ckpt, model, ("fc",))
    assert (verdict, weakness) == (Verdict.PARTIAL, Weakness.SINGLE_MODULE)


def test_decide_verdict_a_loaded_backbone_with_a_new_head_is_an_expected_change() -> None:
    model = model_of(("stem.w", (40,)), ("body.w", (60,)), ("fc.w", (10,)))
    verdict, weakness = _placed_verdict(
        ckpt_of(("stem.w", (40,)), ("body.w", (60,))), model, ("fc",)
    )
    assert (verdict, weakness) == (Verdict.COMPATIBLE_WITH_CHANGES, None)


def _timm_efficientnet_b0(path: Path) -> Path:
    """timm's efficientnet_b0 as timm's train.py saves it (``{"epoch", "arch", "state_dict",
    "optimizer", "version", ...}``; random init instead of training)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0")
    saved = {"epoch": 0, "arch": "efficientnet_b0", "state_dict": model.state_dict(), "version": 2}
    return save_checkpoint(saved, path)


def test_decide_verdict_timm_efficientnet_into_torchvision_is_not_an_expected_change(
    tmp_path: Path,
) -> None:
    """Structural pairing now maps the whole network (issue 12; the merged model computes the
    same, tests/matching/test_efficientnet_pairing.py): never "features is new"."""
    analysis = analyse_file(
        _timm_efficientnet_b0(tmp_path / "e.pth.tar"), "torchvision:efficientnet_b0"
    )
    assert analysis.verdict is Verdict.COMPATIBLE
    assert analysis.placement.heads == ("classifier",)
    assert analysis.placement.backbone_fraction == 1.0
    assert "features is new" not in analysis.message


def test_decide_verdict_the_classifier_alignment_says_the_backbone_is_random(
    tmp_path: Path,
) -> None:
    """The alignment the issue saw (``strip 'classifier.'`` + ``add 'classifier.1.'``), given
    as options so that it holds whatever automatic alignment prefers."""
    path = _timm_efficientnet_b0(tmp_path / "e.pth.tar")
    analysis = analyse_file(
        path, "torchvision:efficientnet_b0", strip_prefix="classifier.", add_prefix="classifier.1."
    )
    assert analysis.result.matched == ("classifier.1.weight", "classifier.1.bias")
    assert analysis.verdict is Verdict.INCOMPATIBLE
    assert analysis.message.startswith("Only the head (classifier, 1.3 M parameters) loads: ")
    assert "the backbone gets 0.0% of its 4.0 M parameters" in analysis.message
    # Nothing loaded is worth freezing: the default plan trains the loaded head too.
    assert analysis.plan.frozen == ()
    assert "because the backbone does not load" in analysis.plan.notes[0]
