"""Load run: 50 concurrent uploads of small checkpoints with status polling, /livez probed.

Starts ``ckpt-compat serve`` as a real process on a free port with a fresh data directory,
then, at once, uploads N distinct small checkpoints (``wait=0``) and polls each check until
it finishes, while a prober hits ``/livez`` every 20 ms. Prints the figures; asserts
nothing about time (the README quotes a measured run).

    .venv/bin/python benchmarks/load_run.py [--uploads 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import save

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _checkpoint(serial: int) -> bytes:
    torch.manual_seed(serial)
    return save({"conv1.weight": torch.randn(64, 3, 7, 7), "fc.bias": torch.randn(1000)})


async def _one_check(client: httpx.AsyncClient, serial: int, data: bytes) -> tuple[str, float]:
    started = time.monotonic()
    files = {"file": (f"ckpt-{serial}.safetensors", io.BytesIO(data))}
    response = await client.post(
        "/v1/checks", data={"architecture": "torchvision:resnet18"}, files=files
    )
    if response.status_code not in (200, 202):
        return f"http {response.status_code}", time.monotonic() - started
    location = response.headers["location"]
    while True:
        check = (await client.get(location)).json()
        if check["status"] in ("succeeded", "failed"):
            return check["status"], time.monotonic() - started
        await asyncio.sleep(0.2)


def _probe(base: str, stop: threading.Event, latencies: list[float]) -> None:
    """In its own thread, so the clients' event loop does not delay the measurement."""
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get("/livez")
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)


async def _run(base: str, uploads: int) -> None:
    files = [_checkpoint(i) for i in range(uploads)]  # built before the clock starts
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(base, stop, latencies))
    prober.start()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=uploads + 10)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        results = await asyncio.gather(
            *(_one_check(client, i, data) for i, data in enumerate(files))
        )
    wall = time.monotonic() - started
    stop.set()
    prober.join()
    outcomes = [r[0] for r in results]
    durations = sorted(r[1] for r in results)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"uploads: {uploads}, succeeded: {outcomes.count('succeeded')}, "
        f"errors: {uploads - outcomes.count('succeeded')} {sorted(set(outcomes))}"
    )
    print(
        f"wall time: {wall:.1f} s; per check: median {statistics.median(durations):.1f} s, "
        f"max {durations[-1]:.1f} s"
    )
    print(
        f"/livez during the run: {len(latencies)} probes, p50 {cuts[49]:.1f} ms, "
        f"p99 {cuts[98]:.1f} ms, max {max(latencies):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--data-dir",
            data_dir,
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(command, cwd=ROOT, env={**os.environ})
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.3)
            asyncio.run(_run(base, args.uploads))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
