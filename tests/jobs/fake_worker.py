"""A stand-in worker speaking the pool's JSON protocol, for pool tests that need control.

Jobs named ``hang-*`` block forever; any other job writes ``<id>.done`` in the directory
given as the ``marks`` setting. Every job first writes ``<id>.pid`` with the worker's pid.
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def fake_worker_main(conn: Connection, settings: dict[str, Any]) -> None:
    marks = Path(settings["marks"])
    conn.send_bytes(b'{"kind": "ready"}')
    while True:
        try:
            message = json.loads(conn.recv_bytes())
        except EOFError:
            return
        if message["kind"] == "stop":
            return
        name = message.get("id") or message.get("fn")
        (marks / f"{name}.pid").write_text(str(os.getpid()))
        if str(name).startswith("hang"):
            time.sleep(3600)
        (marks / f"{name}.done").write_text("1")
        conn.send_bytes(json.dumps({"ok": True, "result": name}).encode())
