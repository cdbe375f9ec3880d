"""Refusal of builder arguments that would make a source fetch pretrained weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.errors import ArchitectureArgumentsError

NO_DOWNLOAD = "the service never downloads weights; upload them as the checkpoint"
# Per source, the builder arguments that select weights. Here, torch-free, so the web process
# refuses them while an upload is still arriving; the sources refuse them again when building.
WEIGHT_KWARGS: dict[str, tuple[str, ...]] = {
    "torchvision": ("weights", "weights_backbone", "pretrained", "pretrained_backbone"),
    "timm": ("pretrained", "checkpoint_path", "cache_dir"),
}


def refuse_weight_kwargs(kwargs: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Raise when any of ``keys`` is set to something other than null or false.

    Args:
        kwargs: The builder arguments.
        keys: The argument names that select weights.

    Raises:
        ArchitectureArgumentsError: A key asks for pretrained weights.
    """
    for key in keys:
        value = kwargs.get(key)
        if value is not None and value is not False:
            raise ArchitectureArgumentsError(
                f"Argument {key}={value!r} is refused: {NO_DOWNLOAD}.", argument=key
            )


def refuse_source_weight_kwargs(source: str, kwargs: Mapping[str, Any]) -> None:
    """``refuse_weight_kwargs`` with the weights arguments of ``source`` (none for others).

    Raises:
        ArchitectureArgumentsError: A key asks for pretrained weights.
    """
    refuse_weight_kwargs(kwargs, WEIGHT_KWARGS.get(source, ()))
