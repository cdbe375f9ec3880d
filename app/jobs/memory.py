"""Recognise a check that ran out of the worker's memory allowance, and name the limit."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

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


@contextlib.contextmanager
def mapped_file_allowance(file_bytes: int) -> Iterator[None]:
    """Raise the worker's address-space limit by the bytes of the checkpoint a check maps.

    ``RLIMIT_AS`` counts memory-mapped files as well as allocations: a 13 GB ``.bin`` that
    torch maps for a merge (or a safetensors file) needs its size in address space, not in
    memory. The cap (``max_worker_memory_bytes``) is about what a check allocates, so the
    file's own size is allowed on top for the length of the check, then taken back.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or file_bytes <= 0:
        yield
        return
    raised = soft + file_bytes
    if hard != resource.RLIM_INFINITY:
        raised = min(raised, hard)
    resource.setrlimit(resource.RLIMIT_AS, (raised, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
