"""The worker process: warms up torch and the architecture libraries once, then serves tasks.

It speaks JSON over its pipe: ``{"kind": "job", "id"}`` runs a check, ``{"kind": "call",
"fn", "kwargs"}`` runs one of ``app.jobs.calls.CALLS``, ``{"kind": "stop"}`` ends it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from app.errors import AppError, InternalError

if TYPE_CHECKING:
    from app.config import Settings
    from app.readers.limits import ReadLimits

log = logging.getLogger(__name__)


def harden_torch_loading() -> None:
    """Make every torch.load in this process weights-only, and refuse the opposite switch."""
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "").strip() not in ("", "0"):
        sys.stderr.write(
            "ckpt-compat: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set; refusing to load uploads.\n"
        )
        raise SystemExit(2)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


MIN_TORCH_VERSION = (2, 10)  # 2.6 fixed CVE-2025-32434, 2.10 fixed CVE-2026-24747


class UnsafeRuntimeError(RuntimeError):
    """The process would run with a torch or an environment that loads uploads unsafely."""


def check_runtime(torch_version: str | None = None) -> None:
    """Refuse to start with torch older than 2.10 or with weights-only loading switched off.

    Runs in the web process at start-up (reading torch's version from its package
    metadata, so torch is not imported there) and again in each worker after the import.

    Raises:
        UnsafeRuntimeError: What is wrong and how to fix it.
    """
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "").strip() not in ("", "0"):
        raise UnsafeRuntimeError(
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: uploads would be unpickled unsafely. "
            "Unset it to start ckpt-compat."
        )
    if torch_version is None:
        from importlib.metadata import version

        torch_version = version("torch")
    numbers = re.match(r"(\d+)\.(\d+)", torch_version)
    found = (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)
    if found < MIN_TORCH_VERSION:
        floor = ".".join(map(str, MIN_TORCH_VERSION))
        raise UnsafeRuntimeError(
            f"torch {torch_version} is installed; ckpt-compat needs torch >= {floor} "
            "(earlier versions can run code from a checkpoint even with weights_only=True)."
        )


def read_limits(settings: Settings) -> ReadLimits:
    """The readers' limits from the settings."""
    from app.readers.limits import ReadLimits

    return ReadLimits(
        max_tensors=settings.max_tensors,
        max_pickle_bytes=settings.max_pickle_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_zip_entries=settings.max_zip_entries,
        max_depth=settings.max_depth,
        max_pickle_nodes=settings.max_pickle_nodes,
        max_key_length=settings.max_key_length,
    )


def limit_address_space(extra_bytes: int) -> int | None:
    """Cap this process's address space at what it uses now plus ``extra_bytes``.

    Called after the imports: ``import torch`` alone reserves about 3.2 GB of address
    space, so a fixed cap would either break the import or allow far too much. A check
    that needs more gets a MemoryError (a problem naming the limit), not the OOM killer.

    Returns:
        The limit set in bytes, or None when ``extra_bytes`` is 0 or the platform has no
        ``/proc/self/statm``.
    """
    if extra_bytes <= 0:
        return None
    import resource

    try:
        with open("/proc/self/statm") as statm:  # noqa: PTH123
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


# Optional packages that torch imports when they are installed and a CPU-only worker never
# uses: triton compiles GPU kernels for torch.compile (torchvision pulls it in through
# torch._dynamo), cuda.bindings drives a GPU. torch treats both as absent when their import
# fails, as on a machine without them; keeping them out saves about 90 MB in every worker.
UNUSED_IN_WORKERS = ("triton", "cuda.bindings")


def warm_up() -> None:
    """Import torch and the architecture libraries once, leaving out what a worker never runs.

    transformers loads its model classes lazily; importing its modelling core here keeps the
    first transformers check from paying about a second of imports.
    """
    for name in UNUSED_IN_WORKERS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: import fails
    import timm  # noqa: F401
    import torch
    import torchvision  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    torch.set_num_threads(1)


def worker_main(conn: Connection, settings_data: dict[str, Any]) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl+C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    harden_torch_loading()
    from app.config import Settings
    from app.jobs.calls import CALLS
    from app.jobs.task import run_job

    settings = Settings(**settings_data)
    warm_up()
    import torch

    check_runtime(torch.__version__)
    from app.readers.limits import set_limits

    set_limits(read_limits(settings))
    limit_address_space(settings.max_worker_memory_bytes)
    from app.logs import configure_logging

    configure_logging(settings.log_format)
    conn.send_bytes(b'{"kind": "ready"}')
    while True:
        try:
            message = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message.get("kind")
        if kind == "stop":
            return
        reply: dict[str, Any]
        try:
            if kind == "job":
                reply = {"ok": True, "result": None, "retire": run_job(message["id"], settings)}
            else:
                result = CALLS[message["fn"]](settings, **message.get("kwargs", {}))
                reply = {"ok": True, "result": result}
        except Exception as exc:
            reply = {"ok": False, "problem": _problem_for(exc, settings)}
            reply["retire"] = reply["problem"].get("limit") == "max_worker_memory_bytes"
        try:
            payload = json.dumps(reply, allow_nan=False).encode()
        except ValueError:  # NaN or infinity in a result: never a 500 from the web process
            log.exception("worker result is not JSON")
            payload = json.dumps({"ok": False, "problem": _internal_problem()}).encode()
        conn.send_bytes(payload)


def _problem_for(exc: Exception, settings: Settings) -> dict[str, Any]:
    from app.jobs.memory import is_out_of_memory, memory_limit_error

    if is_out_of_memory(exc):
        return memory_limit_error(settings).to_problem()
    if isinstance(exc, AppError):
        return exc.to_problem()
    log.exception("worker task failed")
    return _internal_problem()


def _internal_problem() -> dict[str, Any]:
    return InternalError("The task failed unexpectedly.").to_problem()
