"""The worker process: warms up torch and the architecture libraries once, then serves tasks.

It speaks JSON over its pipe: ``{"kind": "job", "id"}`` runs a check, ``{"kind": "call",
"fn", "kwargs"}`` runs one of ``app.jobs.calls.CALLS``, ``{"kind": "stop"}`` ends it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from app.errors import AppError, InternalError

log = logging.getLogger(__name__)


def _harden_torch_loading() -> None:
    """Make every torch.load in this process weights-only, and refuse the opposite switch."""
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "").strip() not in ("", "0"):
        sys.stderr.write(
            "ckpt-compat: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set; refusing to load uploads.\n"
        )
        raise SystemExit(2)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


def _warm_up() -> None:
    import timm  # noqa: F401
    import torch
    import torchvision  # noqa: F401

    torch.set_num_threads(1)


def worker_main(conn: Connection, settings_data: dict[str, Any]) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl+C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _harden_torch_loading()
    from app.config import Settings
    from app.jobs.calls import CALLS
    from app.jobs.task import run_job

    settings = Settings(**settings_data)
    _warm_up()
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
                run_job(message["id"], settings)
                reply = {"ok": True, "result": None}
            else:
                result = CALLS[message["fn"]](settings, **message.get("kwargs", {}))
                reply = {"ok": True, "result": result}
        except AppError as exc:
            reply = {"ok": False, "problem": exc.to_problem()}
        except Exception:
            log.exception("worker task failed")
            reply = {
                "ok": False,
                "problem": InternalError("The task failed unexpectedly.").to_problem(),
            }
        conn.send_bytes(json.dumps(reply, allow_nan=False).encode())
