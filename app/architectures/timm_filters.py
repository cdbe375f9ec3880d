"""timm's own checkpoint filters (``checkpoint_filter_fn``), run on a checkpoint's shapes.

timm converts the original authors' checkpoints (OpenAI CLIP, original DeiT, BiT, ...) into
its names with a filter each model module passes to ``build_model_with_cfg`` as
``pretrained_filter_fn``. Here that very filter runs on tensors without storage (the meta
device) under a dispatch mode that follows every tensor operation, so the trace says which
checkpoint keys each model key is computed from and with which operations; matching scores it
as a candidate alignment, and the merge runs the same filter again, key by key, on the real
tensors of those sources only (``app.merge.timm_filter``).
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from app.tensors import (
    ArchitectureIndex,
    FilteredKey,
    FilterTrace,
    TensorIndex,
)

if TYPE_CHECKING:
    import torch

Filter = Callable[[dict[str, Any], Any], Mapping[str, Any]]

ALREADY_LOADED = 0.9
"""The filter is not tried when this share of the model's keys is in the file as they are: a
timm checkpoint needs no conversion, and a large report pays one set intersection."""

MAX_KEYS = 20_000
"""Checkpoints with more tensors are not traced (timm vision models hold a few thousand)."""

_LOCK = threading.Lock()


def offer_filter(architecture: ArchitectureIndex, checkpoint: TensorIndex) -> ArchitectureIndex:
    """The architecture with its timm filter traced on ``checkpoint``, when it can apply.

    Cheap pre-checks first: a timm architecture, a checkpoint of at most ``MAX_KEYS``
    tensors whose keys are not already the model's; then the model is built on meta and its
    filter traced.

    Example:
        >>> arch = describe("timm:vit_base_patch16_clip_224", {})  # doctest: +SKIP
        >>> arch = offer_filter(arch, checkpoint.index)  # doctest: +SKIP
        >>> arch.filter_trace.function  # doctest: +SKIP
        'timm.models.vision_transformer.checkpoint_filter_fn'
    """
    if architecture.source != "timm" or not 0 < len(checkpoint) <= MAX_KEYS:
        return architecture
    model_keys = architecture.index.tensors.keys()
    if len(model_keys & checkpoint.tensors.keys()) >= ALREADY_LOADED * len(model_keys):
        return architecture
    model, found = build_with_filter(architecture.name.partition(":")[2], architecture.kwargs)
    if found is None:
        return architecture
    return replace(architecture, filter_trace=trace_filter(found, model, checkpoint))


def build_with_filter(name: str, kwargs: Mapping[str, Any]) -> tuple[Any, Filter | None]:
    """The timm model built on meta and the filter its builder passes as
    ``pretrained_filter_fn`` (with its arguments: DeiT's ``adapt_layer_scale=True``), or the
    module's ``checkpoint_filter_fn`` when the builder cannot be watched.

    Cached per (name, kwargs): building even on meta costs a ViT-B half a second, and the
    model is only read (its shapes, by the filter).
    """
    return _built(name, json.dumps(dict(kwargs), sort_keys=True, default=str))


@functools.lru_cache(maxsize=8)
def _built(name: str, kwargs_json: str) -> tuple[Any, Filter | None]:
    import timm
    import torch
    from timm.models._registry import model_entrypoint

    module = importlib.import_module(model_entrypoint(name).__module__)
    seen: dict[str, Any] = {}
    with _watching(module, seen), torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **json.loads(kwargs_json))
    found = seen.get("pretrained_filter_fn") or getattr(module, "checkpoint_filter_fn", None)
    return model, found if callable(found) else None


@contextmanager
def _watching(module: Any, seen: dict[str, Any]) -> Iterator[None]:
    original = getattr(module, "build_model_with_cfg", None)
    if original is None:
        yield
        return

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault("pretrained_filter_fn", kwargs.get("pretrained_filter_fn"))
        return original(*args, **kwargs)

    with _LOCK:
        module.build_model_with_cfg = watched
        try:
            yield
        finally:
            module.build_model_with_cfg = original


def filter_name(found: Filter) -> str:
    """``module.function`` of a filter, with the arguments a ``functools.partial`` binds."""
    inner = getattr(found, "func", found)
    name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', repr(inner))}"
    bound = getattr(found, "keywords", None)
    if bound:  # DeiT III's partial(checkpoint_filter_fn, adapt_layer_scale=True)
        name += "(" + ", ".join(f"{k}={v!r}" for k, v in bound.items()) + ")"
    return name


def meta_state(checkpoint: TensorIndex) -> dict[str, torch.Tensor]:
    """Storage-less tensors of the checkpoint's shapes and dtypes."""
    import torch

    return {
        info.key: torch.empty(
            info.shape, dtype=getattr(torch, info.dtype, torch.float32), device="meta"
        )
        for info in checkpoint
    }


def trace_filter(found: Filter, model: Any, checkpoint: TensorIndex) -> FilterTrace:
    """Run the filter on meta tensors and follow where each output's value comes from.

    Returns:
        The trace; ``error`` says why not when the filter needs values (``.item()``, data-
        dependent indexing) or fails on these shapes.
    """
    import torch

    name = filter_name(found)
    state = meta_state(checkpoint)
    follow = Provenance({id(t): k for k, t in state.items()})
    try:
        with follow, torch.no_grad():
            out = found(dict(state), model)
    except Exception as exc:  # the filter's own failure on this file, said in the report
        return FilterTrace(name, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    outputs = []
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            sources, operations = follow.origin(value)
            outputs.append(FilteredKey(key, tuple(value.shape), sources, operations))
    return FilterTrace(name, tuple(outputs))


class Provenance:
    """A dispatch mode that tags every tensor with the checkpoint keys and operations it came
    from (``origin``); a tensor created from nothing (``torch.zeros``) has no sources."""

    def __init__(self, names: Mapping[int, str]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        self._names = dict(names)
        self._sources: Any = WeakIdKeyDictionary()
        self._operations: Any = WeakIdKeyDictionary()
        outer = self

        class _Mode(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's own typing
            def __torch_dispatch__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                result = func(*args, **(kwargs or {}))
                outer._record(func, (args, kwargs or {}), result)
                return result

        self._mode = _Mode()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Provenance:
        self._mode.__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)  # type: ignore[no-untyped-call]

    def origin(self, tensor: torch.Tensor) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(source keys in sorted order, operations in order) of ``tensor``."""
        if id(tensor) in self._names and tensor not in self._sources:
            return (self._names[id(tensor)],), ()
        return tuple(sorted(self._sources.get(tensor, ()))), tuple(self._operations.get(tensor, ()))

    def _record(self, func: Any, inputs: Any, result: Any) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        sources: set[str] = set()
        operations: list[str] = []
        for tensor in tree_flatten(inputs)[0]:
            if isinstance(tensor, torch.Tensor):
                found, ops = self.origin(tensor)
                sources.update(found)
                operations += [op for op in ops if op not in operations]
        name = str(func.overloadpacket.__name__)
        if name not in operations:
            operations.append(name)
        for tensor in tree_flatten(result)[0]:
            if isinstance(tensor, torch.Tensor):
                self._sources[tensor] = frozenset(sources)
                self._operations[tensor] = tuple(operations)
