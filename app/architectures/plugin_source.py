"""The plugin architecture source: entry points in the ``ckpt_compat.architectures`` group."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from app.architectures.heads import outside_base_model, timm_classifier
from app.errors import ArchitectureBuildError, ArchitectureNotFoundError

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "ckpt_compat.architectures"


def list_names() -> list[str]:
    """Every plugin architecture name installed in this environment, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def build(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Load the plugin's entry point and call it with ``kwargs``.

    Args:
        name: An entry point name from ``list_names()``.
        kwargs: Passed to the plugin callable as keyword arguments.

    Returns:
        The module the plugin returned.

    Raises:
        ArchitectureNotFoundError: No such entry point.
        ArchitectureBuildError: The entry point does not load or returns no ``nn.Module``.
    """
    import torch

    found = sorted(entry_points(group=ENTRY_POINT_GROUP, name=name), key=lambda ep: ep.value)
    if not found:
        raise ArchitectureNotFoundError(f"No plugin architecture named {name!r}.")
    try:
        factory = found[0].load()
    except Exception as exc:
        raise ArchitectureBuildError(
            f"Plugin {name!r} ({found[0].value}) could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    model = factory(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ArchitectureBuildError(
            f"Plugin {name!r} returned {type(model).__name__}, not a torch.nn.Module."
        )
    return model


def head_modules(model: torch.nn.Module) -> tuple[str, ...] | None:
    """A plugin's head by timm's or transformers' convention when it follows one, else None."""
    found = timm_classifier(model)
    return found if found is not None else outside_base_model(model)
