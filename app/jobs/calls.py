"""Functions the web process asks a worker to run, so it never imports torch itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.config import Settings
from app.jobs import index_calls


def catalog(_settings: Settings) -> list[list[str]]:
    """Every buildable architecture as [qualified name, source], sorted."""
    from app.architectures import list_architectures

    return [[str(name), name.source] for name in list_architectures()]


def describe_architecture(
    _settings: Settings, *, name: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The expected tensors of an architecture, in the wire shape of ArchitectureDetail."""
    from app.architectures import describe

    arch = describe(name, kwargs)
    return {
        "name": arch.name,
        "source": arch.source,
        "kwargs": dict(arch.kwargs),
        "parameter_count": arch.index.parameter_numel,
        "tensor_count": len(arch.index),
        "tensors": [
            {"key": t.key, "shape": list(t.shape), "dtype": t.dtype, "kind": t.kind.value}
            for t in arch.index
        ],
    }


CALLS: dict[str, Callable[..., Any]] = {
    "catalog": catalog,
    "describe_architecture": describe_architecture,
    "index_plan": index_calls.index_plan,
    "index_chunk": index_calls.index_chunk,
    "index_finish": index_calls.index_finish,
    "rank_check": index_calls.rank_check,
}
