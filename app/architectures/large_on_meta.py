"""Build a model with its large tensors on the meta device and its small ones on the CPU.

Some constructors compute with tensors while they build (torchvision's RegNet derives its
stage widths with ``torch.arange(...).tolist()``), which fails under ``torch.device("meta")``.
Building those on the CPU instead costs the model's full size in memory and time, and the
size is chosen by the caller's kwargs (``num_classes=10**8`` is a 40-billion-parameter
head). Here only tensors above ``SMALL_NUMEL`` elements go to meta: the constructor's own
arithmetic still runs, and no weight of any size is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

SMALL_NUMEL = 4096
"""Tensors of at most this many elements are made on the CPU (a few KB each)."""

_SIZED: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.empty,
        torch.zeros,
        torch.ones,
        torch.full,
        torch.rand,
        torch.randn,
        torch.empty_strided,
    }
)


def _numel(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    """Elements a sized factory call asks for (0 when the size cannot be read)."""
    size: Any = kwargs.get("size")
    if size is None and args:
        first = args[0]
        if isinstance(first, (tuple, list, torch.Size)) or func in (
            torch.full,
            torch.empty_strided,
        ):
            size = first
        else:
            size = [a for a in args if isinstance(a, int)]
    try:
        return math.prod(int(d) for d in size) if size is not None else 0
    except (TypeError, ValueError):
        return 0


class LargeOnMeta(TorchFunctionMode):
    """While active, factory calls of more than ``SMALL_NUMEL`` elements make meta tensors.

    Example:
        >>> with LargeOnMeta():  # doctest: +SKIP
        ...     model = torchvision.models.regnet_y_400mf(num_classes=10**8)
        >>> model.fc.weight.device  # doctest: +SKIP
        device(type='meta')
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        sized = func in _SIZED and kwargs.get("device") is None
        if sized and _numel(func, args, kwargs) > SMALL_NUMEL:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)
