"""Keys computed by timm's checkpoint filter, merged by running that filter on their sources.

Matching learned from a trace which checkpoint keys each computed key comes from
(``app.matching.filters``). Here the filter runs again with every checkpoint tensor on the meta
device except those sources (and the sources of any output sharing one with them), which are
read for real: the filter's own operations produce the key's value, so the merged tensor is
the one ``model.load_state_dict(checkpoint_filter_fn(state_dict, model))`` would load, and
memory holds one key's sources and outputs at a time. The streaming merge reaches this through
``adapt_tensor``, which only gets a reader, so ``write_merged`` opens the filter's context
around the merge (``filtering``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import UnmergeableTensorError
from app.matching.adapters import Adaptation

if TYPE_CHECKING:
    import torch

    from app.readers.lazy import TensorSource

Reader = Callable[[str], "torch.Tensor"]


@dataclass
class _Context:
    model: Any
    found: Callable[..., Any]
    meta: dict[str, torch.Tensor]
    groups: dict[str, frozenset[str]]  # output key -> the sources to read for it
    cached: dict[str, torch.Tensor] = field(default_factory=dict)
    cached_for: frozenset[str] = frozenset()


_CONTEXT: ContextVar[_Context | None] = ContextVar("timm_filter", default=None)


@contextmanager
def filtering(name: str, kwargs: dict[str, Any], source: TensorSource) -> Iterator[None]:
    """Make the timm filter of architecture ``name`` available to ``filtered_tensor``.

    Args:
        name: The timm model name (without ``timm:``).
        kwargs: Its constructor arguments.
        source: The checkpoint's tensors (their shapes and dtypes make the meta state).
    """
    from app.architectures.timm_filters import build_with_filter, trace_filter
    from app.tensors import TensorIndex, TensorInfo

    model, found = build_with_filter(name, kwargs)
    if found is None:
        raise UnmergeableTensorError(f"timm:{name} has no checkpoint filter to run.")
    stored = source.keys()
    infos = [TensorInfo(k, *_shape_dtype(source, k)) for k in stored]
    index = TensorIndex.from_infos(infos)
    trace = trace_filter(found, model, index)
    groups = _groups({out.key: frozenset(out.sources) for out in trace.outputs})
    from app.architectures.timm_filters import meta_state

    token = _CONTEXT.set(_Context(model, found, meta_state(index), groups))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def filtered_tensor(a: Adaptation, read: Reader) -> torch.Tensor:
    """The filter's value for ``a.key``, its sources read for real and the rest on meta.

    Raises:
        UnmergeableTensorError: No filter context is open, or the filter's output for the
            key is not a real tensor (it reads a tensor the trace did not see).
    """
    import torch

    context = _CONTEXT.get()
    if context is None:
        raise UnmergeableTensorError(
            f"{a.key!r} is computed by timm's checkpoint filter, which this merge does not run."
        )
    wanted = context.groups.get(a.key, frozenset(a.checkpoint_keys))
    if wanted != context.cached_for or a.key not in context.cached:
        state = dict(context.meta)
        state.update({k: read(k) for k in wanted})
        with torch.no_grad():
            out = context.found(state, context.model)
        context.cached = {
            k: v for k, v in out.items() if _real(v) and k in _keys_of(context, wanted)
        }
        context.cached_for = wanted
    value = context.cached.get(a.key)
    if value is None:
        raise UnmergeableTensorError(
            f"timm's checkpoint filter did not compute {a.key!r} from {sorted(wanted)} alone."
        )
    return value


def _keys_of(context: _Context, wanted: frozenset[str]) -> set[str]:
    return {k for k, sources in context.groups.items() if sources == wanted}


def _real(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.device.type != "meta"


def _groups(sources: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Output key -> every source of the outputs connected to it through shared sources (an
    operation mixing a real and a meta tensor would fail, so they are read together)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for key, found in sources.items():
        for source in found:
            parent[root(f"out:{key}")] = root(source)
    members: dict[str, set[str]] = {}
    for found in sources.values():
        for source in found:
            members.setdefault(root(source), set()).add(source)
    return {
        key: frozenset(members.get(root(f"out:{key}"), set())) if found else frozenset()
        for key, found in sources.items()
    }


def _shape_dtype(source: TensorSource, key: str) -> tuple[tuple[int, ...], str]:
    span = source.span(key)
    if span is not None:
        return tuple(span.shape), str(span.dtype).removeprefix("torch.")
    tensor = source.read(key)
    return tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")
