"""Builders of real checkpoints for tests: real architectures with random init, saved in tmp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def resnet18_state_dict(num_classes: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision resnet18 state_dict with (seeded) random init."""
    import torchvision

    torch.manual_seed(seed)
    return dict(torchvision.models.resnet18(num_classes=num_classes).state_dict())


def save_checkpoint(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` (any extension: formats are sniffed from the bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path
