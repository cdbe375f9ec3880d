"""Tests of app.matching.structure: replaced heads (issue 10, defect 2) and renamed modules
(defect 8), on checkpoints saved the way their projects save them."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from app.matching.compare import compare
from app.matching.reasons import Explanations, explain
from app.matching.structure import Structure, refine_structure
from app.schemas import Reason, Verdict
from app.tensors import TensorIndex
from tests.checkpoints import save_checkpoint
from tests.matching.helpers import ckpt_of, model_of
from tests.matching.scenarios import analyse_file, reasons_under

TINY = {
    "vocab_size": 500,
    "max_position_embeddings": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
}


def _moco_v2_checkpoint(path: Path) -> Path:
    """MoCo v2 as facebookresearch/moco's main_moco.py saves it (``--mlp``).

    ``MoCo`` holds ``encoder_q`` and ``encoder_k``, each ``models.__dict__[arch](num_classes=
    dim)`` with ``fc`` replaced by ``Sequential(Linear(dim_mlp, dim_mlp), ReLU(), fc)``, and the
    ``queue`` / ``queue_ptr`` buffers; the model is DistributedDataParallel, so keys start with
    ``module.``; ``save_checkpoint`` writes ``{"epoch", "arch", "state_dict", "optimizer"}``.
    resnet18 and a 1024-long queue instead of resnet50 and 65536, to stay small.
    """
    torch.manual_seed(0)

    def encoder() -> torch.nn.Module:
        net = torchvision.models.resnet18(num_classes=128)
        dim_mlp = net.fc.weight.shape[1]
        net.fc = torch.nn.Sequential(torch.nn.Linear(dim_mlp, dim_mlp), torch.nn.ReLU(), net.fc)
        return net

    state = {}
    for name, net in (("encoder_q", encoder()), ("encoder_k", encoder())):
        state.update({f"module.{name}.{k}": v for k, v in net.state_dict().items()})
    state["module.queue"] = torch.nn.functional.normalize(torch.randn(128, 1024), dim=0)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    saved = {"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {}}
    return save_checkpoint(saved, path)


def test_refine_structure_moco_projector_is_a_replaced_head(tmp_path: Path) -> None:
    analysis = analyse_file(_moco_v2_checkpoint(tmp_path / "moco.pth.tar"), "torchvision:resnet18")
    missing = analysis.explanations.missing
    assert {missing[k].reason for k in ("fc.weight", "fc.bias")} == {Reason.NEW_MODULE}
    assert "fc.0.weight" in missing["fc.weight"].detail
    assert "is new, train it" in missing["fc.weight"].detail
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES
    assert "fc" in analysis.explanations.new_modules
    assert "fc is new" in analysis.message
    assert analysis.plan.trainable == ("fc.weight", "fc.bias")
    structure = analysis.explanations.structure
    assert isinstance(structure, Structure)
    assert list(structure.replaced) == ["fc"]
    assert structure.replaced["fc"].endswith(".fc")


def _dino_checkpoint(path: Path) -> Path:
    """DINO as facebookresearch/dino's main_dino.py saves it: ``{"student", "teacher",
    "optimizer", "epoch", "args", "dino_loss"}``; the teacher is ``MultiCropWrapper(backbone,
    DINOHead)`` (keys ``backbone.*`` and ``head.mlp.{0,2,4}``, ``head.last_layer.weight_g/_v``),
    the student the same under DDP's ``module.``. DINO's ViT has timm's keys; timm's
    vit_tiny_patch16_224 with ``num_classes=0`` is the backbone, the head's output is smaller."""
    import timm

    torch.manual_seed(0)

    def wrapper() -> dict[str, torch.Tensor]:
        backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0)
        state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
        dims = [(192, 256), (256, 256), (256, 64)]
        for i, (n_in, n_out) in zip((0, 2, 4), dims, strict=True):
            state[f"head.mlp.{i}.weight"] = torch.randn(n_out, n_in)
            state[f"head.mlp.{i}.bias"] = torch.zeros(n_out)
        state["head.last_layer.weight_g"] = torch.ones(1024, 1)
        state["head.last_layer.weight_v"] = torch.randn(1024, 64)
        return state

    saved = {
        "student": {f"module.{k}": v for k, v in wrapper().items()},
        "teacher": wrapper(),
        "optimizer": {},
        "epoch": 100,
        "args": None,
        "dino_loss": {"center": torch.zeros(1, 1024)},
    }
    return save_checkpoint(saved, path)


def test_refine_structure_dino_projection_head_is_a_replaced_head(tmp_path: Path) -> None:
    analysis = analyse_file(
        _dino_checkpoint(tmp_path / "checkpoint.pth"), "timm:vit_tiny_patch16_224"
    )
    assert analysis.checkpoint.state_dict_path == "teacher"
    missing = analysis.explanations.missing
    assert {missing[k].reason for k in ("head.weight", "head.bias")} == {Reason.NEW_MODULE}
    assert "head.mlp.0.weight" in missing["head.weight"].detail
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES
    assert analysis.plan.trainable == ("head.weight", "head.bias")


def test_refine_structure_distilbert_transformer_is_bert_encoder_renamed(
    tmp_path: Path,
) -> None:
    """DistilBERT saved by ``save_pretrained`` (model.safetensors, base-model keys
    ``embeddings.*`` and ``transformer.layer.N.*``), checked against a BERT of the same sizes."""
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=TINY["vocab_size"],
        max_position_embeddings=TINY["max_position_embeddings"],
        n_layers=TINY["num_hidden_layers"],
        n_heads=TINY["num_attention_heads"],
        dim=TINY["hidden_size"],
        hidden_dim=TINY["intermediate_size"],
    )
    DistilBertModel(config).save_pretrained(tmp_path / "distilbert")
    analysis = analyse_file(
        tmp_path / "distilbert" / "model.safetensors", "transformers:bert", {"config": TINY}
    )
    assert reasons_under(analysis, "encoder") == {"renamed"}
    detail = analysis.explanations.missing["encoder.layer.0.attention.self.query.weight"].detail
    assert "'transformer'" in detail
    unused = analysis.explanations.unexpected["transformer.layer.0.attention.q_lin.weight"]
    assert unused.reason is Reason.RENAMED and "'encoder'" in unused.detail
    assert "encoder" not in analysis.explanations.new_modules
    assert "transformer" not in analysis.explanations.checkpoint_only_modules
    # BERT's token-type table and pooler are really new: DistilBERT has none.
    assert reasons_under(analysis, "pooler") == {"new_module"}
    assert reasons_under(analysis, "embeddings.token_type_embeddings") == {"new_module"}
    assert analysis.verdict is Verdict.PARTIAL
    assert "encoder is in the checkpoint as transformer" in analysis.message
    assert "encoder" not in analysis.message.split("new")[0].split(". ")[-1]


def _refined(ckpt: TensorIndex, model: TensorIndex, heads: tuple[str, ...] = ()) -> Explanations:
    result = compare(ckpt, model)
    sources = {k: k for k in ckpt.tensors}
    why = explain(result, checkpoint=ckpt, model=model, sources=sources)
    return refine_structure(
        why, result=result, checkpoint=ckpt, model=model, sources=sources, heads=heads
    )


def test_refine_structure_a_lone_linear_is_not_renamed() -> None:
    """RoBERTa's classic: a masked-LM checkpoint has no pooler, and its unused ``lm_head.dense``
    has the pooler's shapes by chance. The pooler stays new (its detail names the look-alike)."""
    model = model_of(
        ("embeddings.w", (50, 8)),
        ("encoder.0.attn.weight", (8, 8)),
        ("encoder.0.ffn.weight", (16, 8)),
        ("pooler.dense.weight", (8, 8)),
        ("pooler.dense.bias", (8,)),
    )
    ckpt = ckpt_of(
        ("embeddings.w", (50, 8)),
        ("encoder.0.attn.weight", (8, 8)),
        ("encoder.0.ffn.weight", (16, 8)),
        ("lm_head.dense.weight", (8, 8)),
        ("lm_head.dense.bias", (8,)),
    )
    why = _refined(ckpt, model)
    assert why.missing["pooler.dense.weight"].reason is Reason.NEW_MODULE
    assert "'lm_head' has its shapes" in why.missing["pooler.dense.weight"].detail
    assert why.new_modules == ("pooler",)
    assert why.checkpoint_only_modules == ("lm_head",)


def test_refine_structure_a_new_head_is_never_renamed() -> None:
    """BERT's next-sentence classifier (2 outputs) has the shapes of a 2-label classifier."""
    model = model_of(
        ("bert.w", (8, 8)),
        ("classifier.out.weight", (2, 8)),
        ("classifier.out.bias", (2,)),
        ("classifier.dense.weight", (8, 8)),
    )
    ckpt = ckpt_of(
        ("bert.w", (8, 8)),
        ("cls.seq.out.weight", (2, 8)),
        ("cls.seq.out.bias", (2,)),
        ("cls.seq.dense.weight", (8, 8)),
    )
    why = _refined(ckpt, model, heads=("classifier",))
    assert {e.reason for e in why.missing.values()} == {Reason.NEW_MODULE}
    assert why.structure is not None and not why.structure.renamed


def test_refine_structure_a_replaced_backbone_module_stays_unexplained() -> None:
    """Only a head replaced by another structure is an expected change."""
    model = model_of(("conv1.weight", (4, 3, 3, 3)), ("body.w", (4, 4)), ("fc.weight", (2, 4)))
    ckpt = ckpt_of(("conv1.0.weight", (4, 3, 3, 3)), ("body.w", (4, 4)), ("fc.weight", (2, 4)))
    why = _refined(ckpt, model, heads=("fc",))
    assert why.missing["conv1.weight"].reason is Reason.UNEXPLAINED
    assert "another structure (conv1.0.weight)" in why.missing["conv1.weight"].detail
