"""A report of a 1.2 GB checkpoint held in S3, against the same report from local disk.

    .venv/bin/python -m benchmarks.s3_report [--model torchvision:vit_l_16] [--repeat 3]

Writes the model with random init as ``.safetensors`` and ``.pth`` (``benchmarks.workloads``,
as ``benchmarks.bench`` does), puts both into moto's S3 server on loopback (started as the
tests start it, ``tests/s3_server.py``), and starts one real ``ckpt-compat serve`` (one
worker, no result reuse) that reads them by URI (``CKPT_COMPAT_SOURCE_URIS=s3://bench/``)
and by path (``CKPT_COMPAT_SOURCE_ROOTS``). Each file is checked by path and by URI in turn,
``--repeat`` rounds after one warm-up check each way of the ``.safetensors`` (the worker
builds the architecture and its S3 client once, as in service); a check's time is
``POST /v1/checks?wait=60`` until its report is fetched.

Bytes are counted three ways for the S3 side: the report's ``checkpoint.bytes_read``, the
requests in the S3 server's own log (method and status), and the bytes the server sent
through a counting TCP relay the service talks to (headers and XML listings included).
The goal is under 1 % of the file. moto answers a ranged GET by reading the whole object
from its temp file under a per-object lock and slicing it, so its per-request time is far
above a real store's (``moto_ranged_get_s``, one 64 KiB GET straight to it): the S3 times
here are an upper bound, the byte and request counts are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from benchmarks import workloads
from benchmarks.bench import machine
from tests.s3_server import S3Server, s3_server
from tests.servers import free_port, serving

BUCKET = "bench"
MB = 1024**2
GB = 1024**3
VIT = "torchvision:vit_l_16"


class CountingRelay:
    """A TCP relay on loopback in front of the S3 server; ``bytes_down`` is what the server
    sent back through it (every connection, as it crossed the socket)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.bytes_down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(256 * 1024):
                target.sendall(data)
                if count:
                    with self._lock:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def put_files(server: S3Server, paths: list[Path]) -> dict[str, str]:
    """Upload each file under ``s3://bench/vit/``; returns the URI of each file's name.

    64 MiB parts: moto keeps a part above 16 MiB in a temp file, not in memory.
    """
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=64 * MB, multipart_chunksize=64 * MB, max_concurrency=2
    )
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    uris = {}
    for path in paths:
        client.upload_file(str(path), BUCKET, f"vit/{path.name}", Config=config)
        uris[path.name] = f"s3://{BUCKET}/vit/{path.name}"
    return uris


def check(base: str, source: dict[str, str], architecture: str) -> tuple[float, dict[str, Any]]:
    """Seconds from submitting a check until its report is fetched, and the report."""
    body = {"source": source, "architecture": architecture}
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=300) as client:
        answer = client.post("/v1/checks", params={"wait": 60}, json=body)
        answer.raise_for_status()
        found = answer.json()
        while found["status"] not in ("succeeded", "failed"):
            found = client.get(f"/v1/checks/{found['id']}", params={"wait": 60}).json()
        if found["status"] != "succeeded":
            raise RuntimeError(f"the check failed: {found.get('error')}")
        report: dict[str, Any] = client.get(found["links"]["report"]).json()
    return time.perf_counter() - started, report


def measure_s3(
    base: str, uri: str, architecture: str, server: S3Server, relay: CountingRelay
) -> dict[str, Any]:
    """One check by URI, with what the S3 server saw of it."""
    seen, down = len(server.requests()), relay.bytes_down
    wall, report = check(base, {"uri": uri}, architecture)
    requests = server.requests()[seen:]
    return {
        "wall": wall,
        "bytes_read": report["checkpoint"]["bytes_read"],
        "verdict": report["summary"]["verdict"],
        "gets": sum(1 for m, _, _ in requests if m == "GET"),
        "ranged_gets": sum(1 for m, _, s in requests if m == "GET" and s == 206),
        "heads": sum(1 for m, _, _ in requests if m == "HEAD"),
        "requests": len(requests),
        "wire_bytes_down": relay.bytes_down - down,
    }


def warm_up(base: str, path: Path, uri: str, architecture: str) -> None:
    """One check each way, not timed: the worker builds the architecture and its S3 client
    once, as in service."""
    check(base, {"path": str(path)}, architecture)
    check(base, {"uri": uri}, architecture)


def ranged_get_seconds(server: S3Server, uri: str, *, count: int = 5) -> float:
    """Median seconds of one 64 KiB ranged GET from the middle of the object, straight to
    the S3 server: its own cost per request (moto reads the whole object for each)."""
    key = uri.removeprefix(f"s3://{BUCKET}/")
    client = server.client()
    size = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    start = size // 2
    walls = []
    for _ in range(count):
        began = time.perf_counter()
        answer = client.get_object(
            Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + 64 * 1024 - 1}"
        )
        answer["Body"].read()
        walls.append(time.perf_counter() - began)
    return statistics.median(walls)


def measure_file(
    base: str,
    path: Path,
    uri: str,
    architecture: str,
    server: S3Server,
    relay: CountingRelay,
    repeat: int,
) -> dict[str, Any]:
    """Both sides of one file, ``repeat`` alternating rounds (after ``warm_up``)."""
    local_walls, s3_runs = [], []
    for _ in range(repeat):
        local_walls.append(check(base, {"path": str(path)}, architecture)[0])
        s3_runs.append(measure_s3(base, uri, architecture, server, relay))
    size = path.stat().st_size
    s3_wall = statistics.median(run["wall"] for run in s3_runs)
    local_wall = statistics.median(local_walls)
    last = s3_runs[-1]
    return {
        "file": path.name,
        "size_gb": size / GB,
        "local_s": local_wall,
        "s3_s": s3_wall,
        "s3_vs_local": s3_wall / local_wall,
        "bytes_read": last["bytes_read"],
        "bytes_read_pct": 100 * last["bytes_read"] / size,
        "wire_bytes_down": last["wire_bytes_down"],
        "wire_pct": 100 * last["wire_bytes_down"] / size,
        "s3_requests": last["requests"],
        "s3_gets_ranged": f"{last['ranged_gets']}/{last['gets']}",
        "s3_heads": last["heads"],
        "verdict": last["verdict"],
        "moto_ranged_get_s": ranged_get_seconds(server, uri),
        "local_walls": sorted(local_walls),
        "s3_walls": sorted(run["wall"] for run in s3_runs),
        "bytes_read_every_run": [run["bytes_read"] for run in s3_runs],
    }


@contextmanager
def service(work: Path, relay: CountingRelay) -> Iterator[str]:
    """A real ``ckpt-compat serve`` reading s3://bench/ through the relay and ``work`` by path."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": relay.endpoint,
        "CKPT_COMPAT_DATA_DIR": str(work / "server-data"),
        "CKPT_COMPAT_SOURCE_URIS": f"s3://{BUCKET}/",
        "CKPT_COMPAT_SOURCE_ROOTS": str(work),
        "CKPT_COMPAT_WORKERS": "1",
        "CKPT_COMPAT_REUSE_RESULTS": "false",
        # moto serves one ranged GET of an object at a time, each reading the whole object:
        # a .pth's few hundred ranges may take minutes there (seconds on a real store).
        "CKPT_COMPAT_CHECK_TIMEOUT_SECONDS": "3600",
        "CKPT_COMPAT_INDEX_ON_START": "false",
        "CKPT_COMPAT_CACHE_DIR": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    with serving([], env, work / "serve.log") as base:
        yield base


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("file", "{}"),
        ("size_gb", "{:.2f}"),
        ("local_s", "{:.3f}"),
        ("s3_s", "{:.3f}"),
        ("s3_vs_local", "{:.1f}x"),
        ("bytes_read", "{:,}"),
        ("bytes_read_pct", "{:.4f} %"),
        ("wire_bytes_down", "{:,}"),
        ("s3_requests", "{}"),
        ("s3_gets_ranged", "{}"),
    ]
    cells = [[name for name, _ in columns]]
    cells += [[fmt.format(row[name]) for name, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=VIT, help="torchvision model (a small one: smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per side")
    parser.add_argument("--workdir", type=Path, help="where checkpoints go (default: temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ckpt-s3-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine_start": machine()}, default=str))
    started = time.perf_counter()
    rows = []
    try:
        paths = list(workloads.write_vision(work, args.model))
        with s3_server(work) as server:
            uris = put_files(server, paths)
            relay = CountingRelay(int(server.endpoint.rsplit(":", 1)[1]))
            try:
                with service(work, relay) as base:
                    # safetensors first: its S3 check is cheap; the worker is then warm.
                    warm_up(base, paths[1], uris[paths[1].name], args.model)
                    for path in reversed(paths):
                        row = measure_file(
                            base, path, uris[path.name], args.model, server, relay, args.repeat
                        )
                        print(json.dumps(_rounded(row)))
                        rows.append(row)
            finally:
                relay.close()
        print("---")
        print_table(rows)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    end = {"machine_end": machine(), "total_s": time.perf_counter() - started}
    print(json.dumps(end, default=str))


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    main()
