"""The timm architecture source: every model of ``timm.list_models()`` (no pretrained tags)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.architectures.heads import timm_classifier
from app.architectures.safety import NO_DOWNLOAD, WEIGHT_KWARGS, refuse_weight_kwargs
from app.errors import ArchitectureArgumentsError

if TYPE_CHECKING:
    import torch

# Pretrained-config fields that point timm at a file, a URL or the hub.
_SOURCE_FIELDS = ("file", "url", "hf_hub_id", "hf_hub_filename", "state_dict")


def list_names() -> list[str]:
    """Every timm model name without pretrained tags, sorted."""
    import timm

    return sorted(timm.list_models())


def build(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Build a timm model with ``pretrained=False``.

    Args:
        name: A name from ``list_names()``.
        kwargs: ``timm.create_model`` keyword arguments (``num_classes``, ``img_size``...).

    Returns:
        The model, on whatever default device the caller set.

    Raises:
        ArchitectureArgumentsError: An argument asks for weights from a file, URL or the hub.
    """
    import timm

    refuse_weight_kwargs(kwargs, WEIGHT_KWARGS["timm"])
    for key in ("pretrained_cfg", "pretrained_cfg_overlay"):
        cfg = kwargs.get(key)
        if isinstance(cfg, Mapping) and any(cfg.get(f) for f in _SOURCE_FIELDS):
            raise ArchitectureArgumentsError(
                f"Argument {key} with a weights location is refused: {NO_DOWNLOAD}.",
                argument=key,
            )
    config = {k: v for k, v in kwargs.items() if k != "pretrained"}
    model: torch.nn.Module = timm.create_model(name, pretrained=False, **config)
    return model


def head_modules(model: torch.nn.Module) -> tuple[str, ...] | None:
    """What ``model.get_classifier()`` returns (``()`` for ``num_classes=0``)."""
    return timm_classifier(model)
