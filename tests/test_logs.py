"""Logs: JSON lines with request and check ids; a check's start and finish are logged."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import logs
from tests.security.conftest import good_checkpoint
from tests.servers import serving


def test_json_formatter_carries_ids_and_extras() -> None:
    record = logging.LogRecord("app.jobs.task", logging.INFO, "x.py", 1, "check finished", (), None)
    record.verdict = "compatible"
    token = logs.check_id.set("c" * 32)
    try:
        logs.ContextIds().filter(record)
    finally:
        logs.check_id.reset(token)
    line = json.loads(logs.formatter("json").format(record))
    assert line["level"] == "INFO" and line["message"] == "check finished"
    assert (line["check_id"], line["request_id"], line["verdict"]) == ("c" * 32, "-", "compatible")
    assert "time" in line


@pytest.mark.slow
def test_server_logs_json_lines_with_request_and_check_ids(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    env = {**os.environ, "CKPT_COMPAT_LOG_FORMAT": "json", "CKPT_COMPAT_DATA_DIR": str(tmp_path)}
    with serving(["--workers", "1"], env, log_path) as base:
        response = httpx.post(
            f"{base}/v1/checks",
            params={"wait": 60},
            headers={"X-Request-ID": "req-42"},
            data={"architecture": "torchvision:resnet18"},
            files={"file": ("c.pt", good_checkpoint())},
            timeout=90,
        )
        assert response.headers["x-request-id"] == "req-42"
        check = response.json()
        assert check["status"] == "succeeded"
        made_up = httpx.get(f"{base}/livez", headers={"X-Request-ID": "bad id ;"})
        assert len(made_up.headers["x-request-id"]) == 32  # an invalid id is replaced
    lines: list[dict[str, Any]] = []
    for raw in log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    events = {line.get("event"): line for line in lines if line.get("check_id") == check["id"]}
    assert events["check.started"]["architecture"] == "torchvision:resnet18"
    finished = events["check.finished"]
    assert finished["verdict"] in (
        "compatible",
        "compatible_with_changes",
        "partial",
        "incompatible",
    )
    assert finished["duration_seconds"] >= 0
    assert any(line.get("request_id") == "req-42" for line in lines)
