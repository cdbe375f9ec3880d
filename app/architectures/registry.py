"""The architecture registry: list, resolve and describe architectures across all sources."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.architectures.building import (
    build_model_with_notes,
    canonical_kwargs,
    find_head_modules,
    source_module,
)
from app.architectures.conversions import find_conversions
from app.architectures.ties import find_ties
from app.names import SOURCE_PRECEDENCE, QualifiedName, check_source, resolve_in
from app.tensors import ArchitectureIndex, TensorIndex, TensorInfo, TensorKind

if TYPE_CHECKING:
    import torch

_DESCRIBE_CACHE_SIZE = 32


def list_architectures(*, source: str | None = None) -> list[QualifiedName]:
    """Every buildable architecture, sorted by (name, source).

    Args:
        source: Only this source (``torchvision``, ``timm``, ``transformers``, ``plugin``);
            all when None.

    Returns:
        A new list (the listing itself is cached per process).

    Raises:
        ArchitectureNotFoundError: Unknown source.
    """
    return list(_list_cached(source))


@functools.cache
def _list_cached(source: str | None) -> tuple[QualifiedName, ...]:
    sources = SOURCE_PRECEDENCE if source is None else (check_source(source),)
    found = [QualifiedName(s, n) for s in sources for n in _names_of(s)]
    return tuple(sorted(found, key=lambda q: (q.name, q.source)))


@functools.cache
def _names_of(source: str) -> frozenset[str]:
    names: list[str] = source_module(source).list_names()
    return frozenset(names)


def resolve(text: str) -> QualifiedName:
    """Resolve a qualified or bare architecture name against every source.

    A bare name resolves by ``SOURCE_PRECEDENCE``: torchvision, timm, transformers, plugin.

    Raises:
        ArchitectureNotFoundError: No source knows the name; the detail and the
            ``suggestions`` extension list up to 5 close names.

    Example:
        >>> str(resolve("resnet18"))
        'torchvision:resnet18'
    """
    return resolve_in(text, _list_cached(None))


def describe(text: str, kwargs: Mapping[str, Any]) -> ArchitectureIndex:
    """Resolve an architecture, build it on meta and return its expected tensor index.

    Keys and order are those of ``model.state_dict()`` (tied aliases and persistent buffers
    included). Results are cached per (qualified name, canonical kwargs), so describing the
    same architecture twice builds it once. Treat the returned value as read-only.

    Args:
        text: ``source:name`` or a bare name.
        kwargs: JSON-like constructor arguments.

    Returns:
        The architecture's qualified name, source, kwargs, tensor index and notes.

    Raises:
        ArchitectureNotFoundError: Unknown name.
        ArchitectureArgumentsError: The kwargs are not JSON-like or the constructor
            rejected them.
        ArchitectureBuildError: The model could not be built.

    Example:
        >>> arch = describe("torchvision:resnet18", {"num_classes": 10})
        >>> arch.name, arch.index.get("fc.weight").shape
        ('torchvision:resnet18', (10, 512))
    """
    return _describe_cached(resolve(text), canonical_kwargs(kwargs))


@functools.lru_cache(maxsize=_DESCRIBE_CACHE_SIZE)
def _describe_cached(qualified: QualifiedName, kwargs_json: str) -> ArchitectureIndex:
    kwargs: dict[str, Any] = json.loads(kwargs_json)
    model, notes = build_model_with_notes(qualified, kwargs, device="meta")
    index, skipped = index_model(model)
    if skipped:
        notes += (
            f"{len(skipped)} state_dict entries are not tensors and are not compared "
            f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}).",
        )
    renamings, fusions = find_conversions(model)
    return ArchitectureIndex(
        name=str(qualified),
        source=qualified.source,
        kwargs=kwargs,
        index=index,
        notes=notes,
        head_modules=find_head_modules(qualified, model),
        renamings=renamings,
        fusions=fusions,
    )


def index_model(model: torch.nn.Module) -> tuple[TensorIndex, list[str]]:
    """The tensor index of ``model.state_dict()`` and the keys of its non-tensor entries.

    Args:
        model: Any module (on any device).

    Returns:
        The index (kind ``parameter``, ``buffer``, or ``tied`` for a second name of a
        parameter, with ``tied_to`` its first name) and the skipped non-tensor keys.
    """
    import torch

    parameters = dict(model.named_parameters(remove_duplicate=False))
    ties = find_ties(model)
    infos: list[TensorInfo] = []
    skipped: list[str] = []
    for key, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        kind = TensorKind.PARAMETER if key in parameters else TensorKind.BUFFER
        if key in ties:  # counted once, under its first name, as model.parameters() does
            kind = TensorKind.TIED
        dtype = str(value.dtype).removeprefix("torch.")
        infos.append(TensorInfo(key, tuple(value.shape), dtype, kind=kind, tied_to=ties.get(key)))
    return TensorIndex.from_infos(infos), skipped


def clear_caches() -> None:
    """Forget the cached listings and descriptions (after installing a plugin, in tests)."""
    _list_cached.cache_clear()
    _names_of.cache_clear()
    _describe_cached.cache_clear()
