"""A small catalogue index (a dozen architectures, a few seconds) and checkpoints to rank."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.tensors import CheckpointIndex, TensorIndex, TensorInfo

SMALL_CATALOGUE = [
    "timm:convnext_tiny",
    "torchvision:convnext_tiny",
    "torchvision:resnet18",
    "torchvision:resnet50",
    "timm:resnet50",
    "timm:vit_small_patch16_224",
    "timm:deit_small_patch16_224",
    "timm:vit_small_patch16_384",
    "timm:vit_base_patch16_224",
    "torchvision:vit_b_16",
    "transformers:bert",
    "transformers:roberta",
    "transformers:electra",
    "transformers:vit",
]


def build_small_index(cache_dir: Path) -> dict[str, Any]:
    """Build the index of ``SMALL_CATALOGUE`` into ``cache_dir`` (as the command does)."""
    from app.catalog_index.store import build_index

    return build_index(cache_dir, SMALL_CATALOGUE)


def index_of(state_dict: Mapping[str, Any]) -> CheckpointIndex:
    """A checkpoint index of a state_dict, as a reader would give it."""
    infos = [
        TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in state_dict.items()
    ]
    return CheckpointIndex("torch_zip", TensorIndex.from_infos(infos))


def bert_state_dict(*, hidden: int = 384, layers: int = 6) -> dict[str, Any]:
    """A BERT of another width and depth than the default (12 x 768)."""
    import transformers

    config = transformers.BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=4 * hidden,
    )
    return dict(transformers.BertModel(config).state_dict())


def custom_state_dict() -> dict[str, Any]:
    """A small network of no library, with widths no catalogue architecture has."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 37, 5),
        torch.nn.ReLU(),
        torch.nn.Conv2d(37, 53, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(53 * 9, 11),
    )
    return dict(net.state_dict())
