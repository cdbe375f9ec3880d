"""The torchvision architecture source: every model of ``torchvision.models.list_models()``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.architectures.heads import TORCHVISION_HEADS, named_top_level
from app.architectures.safety import WEIGHT_KWARGS, refuse_weight_kwargs

if TYPE_CHECKING:
    import torch

# Keyword arguments that would make a builder fetch pretrained weights.
_WEIGHT_KWARGS = WEIGHT_KWARGS["torchvision"]


def list_names() -> list[str]:
    """Every torchvision model name, sorted (classification, detection, video, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models())


def build(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Build a torchvision model with random-free, download-free defaults.

    Args:
        name: A name from ``list_names()``.
        kwargs: Builder keyword arguments (``num_classes``...); weight arguments may only be
            null or false.

    Returns:
        The model, on whatever default device the caller set.

    Raises:
        ArchitectureArgumentsError: A weights argument asks for pretrained weights.
    """
    import torchvision

    refuse_weight_kwargs(kwargs, _WEIGHT_KWARGS)
    config = {k: v for k, v in kwargs.items() if k not in _WEIGHT_KWARGS}
    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    if "weights_backbone" in params:
        # Detection and segmentation builders default to ImageNet backbone weights.
        config["weights_backbone"] = None
    model: torch.nn.Module = torchvision.models.get_model(name, weights=None, **config)
    return model


def head_modules(model: torch.nn.Module) -> tuple[str, ...] | None:
    """The classifier (``fc``, ``classifier``, ``heads``...) or detection/segmentation heads."""
    return named_top_level(model, TORCHVISION_HEADS)
