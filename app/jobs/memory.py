"""Recognise a check that ran out of the worker's memory allowance, and name the limit."""

from __future__ import annotations

import errno

from app.config import Settings
from app.errors import LimitExceededError

_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory")
_MAX_CHAIN = 16


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from is an allocation failure.

    Under ``RLIMIT_AS`` Python raises MemoryError, torch's allocator a RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"), mmap an OSError(ENOMEM); readers and
    architecture builders may wrap them in their own errors.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < _MAX_CHAIN:
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:
            return True
        if isinstance(current, RuntimeError) and any(m in str(current).lower() for m in _MARKERS):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def memory_limit_error(settings: Settings) -> LimitExceededError:
    """The problem of a check that needed more memory than a worker may use."""
    limit = settings.max_worker_memory_bytes
    return LimitExceededError(
        f"The check needed more memory than a worker may use ({limit} bytes beyond its "
        "libraries; setting CKPT_COMPAT_MAX_WORKER_MEMORY_BYTES). The service keeps serving.",
        limit="max_worker_memory_bytes",
        limit_value=limit,
    )
