"""Checkpoints laid out as well-known training code saves them, from the real architecture
classes with random init (on the meta device unless the tensors' values matter), and a helper
that runs a check on one end to end at the engine level: read, align, explain, merge.

Each builder names the code it follows. Where the project's own package is not installed,
its wrapper module is reproduced here attribute for attribute around the torchvision class
the project wraps, so the state_dict keys and shapes are the ones the project writes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from app.architectures.registry import describe
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.merge.streaming import stream_merge
from app.readers.checkpoint import open_tensors, read_checkpoint
from tests.checkpoints import save_checkpoint


def _build(factory: Callable[[], nn.Module], *, meta: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if not meta:
        return factory()
    with torch.device("meta"):
        return factory()


class MoCoV2(nn.Module):
    """facebookresearch/moco ``moco/builder.py`` (MoCo v2: ``--mlp``): two encoders built by
    ``base_encoder(num_classes=dim)``, each ``fc`` replaced by Linear-ReLU-Linear, and the
    ``queue``/``queue_ptr`` buffers. K is a constructor argument (65536 by default)."""

    def __init__(self, base_encoder: Callable[..., nn.Module], dim: int = 128, k: int = 4096):
        super().__init__()
        self.encoder_q = base_encoder(num_classes=dim)
        self.encoder_k = base_encoder(num_classes=dim)
        encoder: Any
        for encoder in (self.encoder_q, self.encoder_k):
            dim_mlp = encoder.fc.weight.shape[1]
            encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), encoder.fc)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, k), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def moco_v2(arch: str = "resnet50", *, meta: bool = True, seed: int = 0) -> dict[str, Any]:
    """``main_moco.py``'s ``save_checkpoint``: the DataParallel model's state_dict (keys
    ``module.encoder_q.*``) with ``epoch``, ``arch`` and ``optimizer``."""
    base = getattr(torchvision.models, arch)
    model = nn.DataParallel(_build(lambda: MoCoV2(base), meta=meta, seed=seed))
    return {"epoch": 200, "arch": arch, "state_dict": model.state_dict(), "optimizer": {}}


def _mlp(layers: int, in_dim: int, mlp_dim: int, out_dim: int, last_bn: bool = True) -> nn.Module:
    """facebookresearch/moco-v3 ``MoCo._build_mlp``."""
    mlp: list[nn.Module] = []
    for n in range(layers):
        dim1 = in_dim if n == 0 else mlp_dim
        dim2 = out_dim if n == layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if n < layers - 1:
            mlp += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


class MoCoV3ResNet(nn.Module):
    """facebookresearch/moco-v3 ``moco/builder.py`` ``MoCo_ResNet``: ``base_encoder`` and
    ``momentum_encoder`` (``resnet(zero_init_residual=True, num_classes=mlp_dim)`` with a
    projector ``fc``) and a ``predictor``."""

    def __init__(self, arch: str, dim: int = 256, mlp_dim: int = 4096):
        super().__init__()
        factory = getattr(torchvision.models, arch)
        self.base_encoder = factory(zero_init_residual=True, num_classes=mlp_dim)
        self.momentum_encoder = factory(zero_init_residual=True, num_classes=mlp_dim)
        hidden_dim = self.base_encoder.fc.weight.shape[1]
        for encoder in (self.base_encoder, self.momentum_encoder):
            del encoder.fc
            encoder.fc = _mlp(2, hidden_dim, mlp_dim, dim)
        self.predictor = _mlp(2, dim, mlp_dim, dim, False)


def moco_v3(arch: str = "resnet50") -> dict[str, Any]:
    """moco-v3 ``main_moco.py``: DistributedDataParallel (``module.``), with ``scaler``."""
    model = nn.DataParallel(_build(lambda: MoCoV3ResNet(arch), meta=True))
    return {
        "epoch": 100,
        "arch": arch,
        "state_dict": model.state_dict(),
        "optimizer": {},
        "scaler": {},
    }


class DINOHead(nn.Module):
    """facebookresearch/dino ``vision_transformer.py`` ``DINOHead`` (weight-normed last layer)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck),
        )
        with warnings.catch_warnings():  # DINO uses the old weight_norm, deprecated in torch
            warnings.simplefilter("ignore")
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))


class MultiCropWrapper(nn.Module):
    """dino ``utils.MultiCropWrapper``: ``backbone`` (its ``fc`` an Identity) and ``head``."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.head = head


def dino_resnet(arch: str = "resnet50", out_dim: int = 4096) -> dict[str, Any]:
    """dino ``main_dino.py``'s ``save_dict`` for a torchvision arch: with BatchNorm both the
    student and the teacher are DistributedDataParallel (``module.``). DINO also saves its
    ``args`` Namespace, which weights_only loading refuses: users drop it, and so do we."""

    def network() -> nn.Module:
        backbone = getattr(torchvision.models, arch)()
        return MultiCropWrapper(backbone, DINOHead(backbone.fc.weight.shape[1], out_dim))

    student = nn.DataParallel(_build(network, meta=True, seed=1))
    teacher = nn.DataParallel(_build(network, meta=True, seed=2))
    return {
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": {},
        "epoch": 100,
        "dino_loss": {"center": torch.zeros(1, out_dim, device="meta")},
    }


def basicsr(net_g: nn.Module, net_g_ema: nn.Module) -> dict[str, Any]:
    """XPixelGroup/BasicSR ``BaseModel.save_network([net_g, net_g_ema], 'net_g', ...,
    param_key=['params', 'params_ema'])``: one dict per network, ``module.`` removed."""
    return {
        "params": {k.removeprefix("module."): v for k, v in net_g.state_dict().items()},
        "params_ema": {k.removeprefix("module."): v for k, v in net_g_ema.state_dict().items()},
    }


def mmpretrain_resnet(arch: str = "resnet18", *, meta: bool = True) -> dict[str, Any]:
    """open-mmlab/mmpretrain ``ImageClassifier`` with ``ResNet`` + ``LinearClsHead`` as its
    runner saves it: ``{'meta', 'state_dict', ...}``, keys ``backbone.*`` (mmpretrain's ResNet
    names its layers as torchvision does: ``conv1``, ``bn1``, ``layer1.0.downsample.0``) and
    ``head.fc.*``; the torchvision class stands in for the backbone."""
    state = _build(getattr(torchvision.models, arch), meta=meta).state_dict()
    layout = {
        ("head." if k.startswith("fc.") else "backbone.") + k: v
        for k, v in state.items()
        if k != "fc.num_batches_tracked"
    }
    return {"meta": {"epoch": 100, "mmengine_version": "0.10.0"}, "state_dict": layout}


def run_check(
    obj: Any, path: Path, architecture: str, kwargs: dict[str, Any] | None = None, **options: Any
) -> Analysis:
    """Save ``obj`` at ``path`` and analyse it against ``architecture`` as a worker does."""
    save_checkpoint(obj, path)
    checkpoint = read_checkpoint(path, state_dict_key=options.get("state_dict_key", "auto"))
    return analyse(checkpoint, describe(architecture, kwargs or {}), MatchOptions(**options))


def merge(path: Path, analysis: Analysis, factory: Callable[[], nn.Module]) -> dict[str, Any]:
    """Write the merge of a check as a worker does and load it back."""
    out = path.with_suffix(".merged.pt")
    with open_tensors(path, state_dict_path=analysis.checkpoint.state_dict_path) as source:
        stream_merge(
            _build(factory, meta=True),
            source,
            out,
            key_map=analysis.key_map,
            build_cpu=factory,
            format="pt",
            metadata={"check_id": "test"},
        )
    merged: dict[str, Any] = torch.load(out, weights_only=True)
    return merged
