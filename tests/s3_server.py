"""A real S3-compatible server for tests: moto's standalone server on a free loopback port.

moto installs from PyPI (the dev extra) and speaks the S3 wire protocol, ranged GETs and
multipart uploads included. Its request log (one line per request, with the method, path and
status) lets a test count what the service fetched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_for_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours some lines
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass
class S3Server:
    endpoint: str
    log: Path

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served so far."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LINE.search(_ANSI.sub("", line))
            if match:
                found.append((match["method"], match["path"], int(match["status"])))
        return found

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_lower(CREDENTIALS))


def _lower(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_REGION"],
    }


@contextmanager
def s3_server(directory: Path) -> Iterator[S3Server]:
    """moto's server, with the AWS environment pointing at it for the ``with`` (spawned
    workers inherit it)."""
    port = free_port()
    log = directory / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
        yield S3Server(endpoint, log)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        process.wait(timeout=10)
