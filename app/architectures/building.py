"""Build a model from a qualified name and JSON kwargs, on the meta device or for real on CPU."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from app.architectures import (
    plugin_source,
    timm_source,
    torchvision_source,
    transformers_source,
)
from app.errors import AppError, ArchitectureArgumentsError, ArchitectureBuildError
from app.names import QualifiedName, check_source

if TYPE_CHECKING:
    import torch

# Each source module exposes list_names(), build(name, kwargs) and head_modules(model).
SOURCE_MODULES: dict[str, ModuleType] = {
    "torchvision": torchvision_source,
    "timm": timm_source,
    "transformers": transformers_source,
    "plugin": plugin_source,
}

_KWARGS_ERRORS = (TypeError, ValueError, AssertionError)
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.\-]+){2,}")
_MAX_MESSAGE = 300


def source_module(source: str) -> ModuleType:
    """The module of ``source`` (one of ``SOURCE_PRECEDENCE``).

    Raises:
        ArchitectureNotFoundError: Unknown source.
    """
    return SOURCE_MODULES[check_source(source)]


def canonical_kwargs(kwargs: Mapping[str, Any]) -> str:
    """The canonical JSON text of ``kwargs`` (sorted keys, no spaces).

    Raises:
        ArchitectureArgumentsError: ``kwargs`` is not a JSON object of JSON values.
    """
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ArchitectureArgumentsError("Architecture arguments must be a JSON object.")
    try:
        return json.dumps(kwargs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArchitectureArgumentsError(
            "Architecture arguments must be JSON values (null, booleans, finite numbers, "
            f"strings, lists, objects): {short_message(exc)}"
        ) from exc


def short_message(exc: BaseException) -> str:
    """The first line of an exception's message, paths reduced to file names, truncated."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _PATH.sub(lambda m: re.split(r"[\\/]", m.group(0))[-1], text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def build_model(
    name: QualifiedName,
    kwargs: Mapping[str, Any],
    *,
    device: Literal["meta", "cpu"] = "meta",
    seed: int = 0,
) -> torch.nn.Module:
    """Build an architecture; on ``meta`` no weight memory is allocated and no init runs.

    Args:
        name: The resolved name (see ``resolve``).
        kwargs: JSON-like constructor arguments (``{"num_classes": 10}``).
        device: ``meta`` for shapes only; ``cpu`` for real, reproducible initial weights.
        seed: The RNG seed of a CPU build (the global RNG state is restored afterwards).

    Returns:
        The model. A meta build that needed a CPU fallback is moved to meta afterwards.

    Raises:
        ArchitectureArgumentsError: The constructor rejected the kwargs (its message quoted).
        ArchitectureBuildError: The model could not be built for another reason.
    """
    model, _ = build_model_with_notes(name, kwargs, device=device, seed=seed)
    return model


def build_model_with_notes(
    name: QualifiedName,
    kwargs: Mapping[str, Any],
    *,
    device: Literal["meta", "cpu"] = "meta",
    seed: int = 0,
) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """Like ``build_model``, also returning notes (sentences) on what the build did."""
    import torch

    canonical_kwargs(kwargs)
    source = source_module(name.source)
    if device == "cpu":
        return _build_on_cpu(source, name, kwargs, seed=seed), ()
    try:
        with warnings.catch_warnings(record=True) as caught, torch.device("meta"):
            warnings.simplefilter("always")
            model: torch.nn.Module = source.build(name.name, kwargs)
        return model, warning_notes(name, caught)
    except AppError:
        raise
    except Exception as exc:
        if kwargs and isinstance(exc, _KWARGS_ERRORS) and "meta" not in str(exc).lower():
            raise _arguments_error(name, exc) from exc
        reason = short_message(exc)
    try:
        model = _build_large_on_meta(source, name, kwargs)
        note = (
            f"{name} computes with tensors while it is built ({reason}), so it was built "
            "with only its large tensors on the meta device."
        )
    except AppError:
        raise
    except Exception:
        # Last resort, bounded by the worker's address-space limit (RLIMIT_AS).
        model = _build_on_cpu(source, name, kwargs, seed=seed).to(device="meta")
        note = (
            f"{name} could not be built on the meta device ({reason}); "
            "it was built on the CPU instead, so building it costs real memory and time."
        )
    return model, (note,)


MAX_WARNING_NOTES = 5
"""The most library warnings of one build carried into the report's notes."""


def warning_notes(name: QualifiedName, caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """The warnings a library printed while building, as report notes (not only stderr).

    A deprecated argument or a renamed model name is news for the person reading the report;
    each distinct message once, paths reduced to file names, at most ``MAX_WARNING_NOTES``.

    Example:
        >>> import warnings
        >>> w = warnings.WarningMessage(FutureWarning("old name"), FutureWarning, "x.py", 1)
        >>> warning_notes(QualifiedName("timm", "vit"), [w])
        ('Building timm:vit warned (FutureWarning): old name',)
    """
    notes: list[str] = []
    for item in caught:
        message = item.message if isinstance(item.message, Warning) else Warning(item.message)
        text = f"Building {name} warned ({item.category.__name__}): {short_message(message)}"
        if text not in notes:
            notes.append(text)
    if len(notes) > MAX_WARNING_NOTES:
        notes = [*notes[:MAX_WARNING_NOTES], f"... and {len(notes) - MAX_WARNING_NOTES} more."]
    return tuple(notes)


def _build_large_on_meta(
    source: ModuleType, name: QualifiedName, kwargs: Mapping[str, Any]
) -> torch.nn.Module:
    """Build with tensors over a few KB on meta (``LargeOnMeta``), then move the rest there."""
    from app.architectures.large_on_meta import LargeOnMeta

    with warnings.catch_warnings(), LargeOnMeta():
        warnings.simplefilter("ignore")
        try:
            model: torch.nn.Module = source.build(name.name, kwargs)
        except _KWARGS_ERRORS as exc:
            if kwargs and "meta" not in str(exc).lower():
                raise _arguments_error(name, exc) from exc
            raise
    return model.to(device="meta")


def _build_on_cpu(
    source: ModuleType, name: QualifiedName, kwargs: Mapping[str, Any], *, seed: int
) -> torch.nn.Module:
    import torch

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), torch.device("cpu"):
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        try:
            model: torch.nn.Module = source.build(name.name, kwargs)
        except AppError:
            raise
        except _KWARGS_ERRORS as exc:
            if kwargs:
                raise _arguments_error(name, exc) from exc
            raise _build_error(name, exc) from exc
        except Exception as exc:
            raise _build_error(name, exc) from exc
    return model


def _arguments_error(name: QualifiedName, exc: BaseException) -> ArchitectureArgumentsError:
    return ArchitectureArgumentsError(
        f"{name} rejected its arguments: {short_message(exc)}", architecture=str(name)
    )


def _build_error(name: QualifiedName, exc: BaseException) -> ArchitectureBuildError:
    return ArchitectureBuildError(
        f"{name} could not be built: {type(exc).__name__}: {short_message(exc)}",
        architecture=str(name),
    )


def find_head_modules(name: QualifiedName, model: torch.nn.Module) -> tuple[str, ...] | None:
    """The modules the architecture calls its head, by its source's convention.

    Matching weighs loaded parameters by where they sit, so it needs the architecture's own
    word on what is head and what is backbone; None when the source has no convention.

    Example:
        >>> from app.names import QualifiedName
        >>> model = build_model(QualifiedName("torchvision", "fasterrcnn_resnet50_fpn"), {})
        >>> find_head_modules(QualifiedName("torchvision", "fasterrcnn_resnet50_fpn"), model)
        ('rpn', 'roi_heads')
    """
    found: tuple[str, ...] | None = source_module(name.source).head_modules(model)
    return found
