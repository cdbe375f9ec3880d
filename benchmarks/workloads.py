"""Checkpoints the benchmark writes for itself, and the loopback upload it times.

python -m benchmarks.workloads vit DIR      # vit_l_16.pth and vit_l_16.safetensors
python -m benchmarks.workloads llama DIR    # Llama-shaped 7B bf16, sharded safetensors
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1024**3
SHARD_BYTES = 5 * GB
BLOCK_BYTES = 64 * 1024**2
ROOT = Path(__file__).resolve().parent.parent
LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def total_memory() -> int:
    return _meminfo("MemTotal")


def _child(kind: str, directory: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.workloads", kind, str(directory), *extra],
        cwd=ROOT,
        check=True,
    )


def write_vision(directory: Path, name: str) -> tuple[Path, Path]:
    """A torchvision model with random init as .pth and .safetensors (once per work dir)."""
    stem = directory / name.partition(":")[2]
    if not stem.with_suffix(".safetensors").exists():
        _child("vision", directory, name)
    return stem.with_suffix(".pth"), stem.with_suffix(".safetensors")


def write_llama(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The Llama-shaped checkpoint (written once per directory) and its config."""
    if not (directory / "model.safetensors.index.json").exists():
        _child("llama", directory)
    return directory, dict(LLAMA_7B)


def _make_vision(directory: Path, name: str) -> None:
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    bare = name.partition(":")[2]
    state = torchvision.models.get_model(bare, weights=None).state_dict()
    torch.save(state, directory / f"{bare}.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, directory / f"{bare}.safetensors")


def _make_llama(directory: Path, *_: str) -> None:
    """Sharded safetensors written header first, then bytes from a random block: no tensors."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in LLAMA_7B.items() if k != "model_type"}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(CONFIG_MAPPING["llama"](**fields))
    shapes = [(k, list(v.shape), v.numel() * 2) for k, v in model.state_dict().items()]
    shards: list[list[tuple[str, list[int], int]]] = [[]]
    for entry in shapes:
        if shards[-1] and sum(e[2] for e in shards[-1]) + entry[2] > SHARD_BYTES:
            shards.append([])
        shards[-1].append(entry)
    block = os.urandom(BLOCK_BYTES)
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(directory / name, shard, block)
        weight_map.update(dict.fromkeys((e[0] for e in shard), name))
    total = sum(e[2] for e in shapes)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(LLAMA_7B, indent=2))


def _write_safetensors(path: Path, entries: list[tuple[str, list[int], int]], block: bytes) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape, nbytes in entries:
        header[key] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as out:
        out.write(len(raw).to_bytes(8, "little"))
        out.write(raw)
        remaining = offset
        while remaining:
            step = min(remaining, len(block))
            out.write(block[:step])
            remaining -= step


# ---------------------------------------------------------------- scenario 4


def _chunks(path: Path, size: int = 1024**2) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def _peak_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def upload_over_loopback(
    work: Path, path: Path, architecture: str, repeat: int = 3
) -> dict[str, Any]:
    """Time a raw upload plus its report against sending the bytes to a discard endpoint.

    ``repeat`` rounds of (discard, upload + check); each figure is the median over rounds.
    Result reuse is off, so every round's check runs.
    """
    import httpx

    port = 8765
    data = work / "server-data"
    shutil.rmtree(data, ignore_errors=True)  # a kept workdir must not turn the check into a reuse
    env = {
        **os.environ,
        "CKPT_COMPAT_DATA_DIR": str(data),
        "CKPT_COMPAT_WORKERS": "1",
        "CKPT_COMPAT_REUSE_RESULTS": "false",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.server:create_bench_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=None) as client:
            _wait_ready(client)
            _warm(client, work, architecture)
            rounds = [_upload_round(client, server.pid, path, architecture) for _ in range(repeat)]
        return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} | {
            "server_peak": _peak_of(server.pid),
            "discard_walls": sorted(r["discard"] for r in rounds),
            "ours_walls": sorted(r["ours"] for r in rounds),
            "sha256": _sha256_time(path),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def _sha256_time(path: Path) -> float:
    """Seconds to sha256 the file on one core from the page cache: a floor for any upload."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        chunks = list(iter(lambda: f.read(4 * 1024**2), b""))
    start = time.perf_counter()
    for chunk in chunks:
        digest.update(chunk)
    return time.perf_counter() - start


def _upload_round(client: Any, server_pid: int, path: Path, architecture: str) -> dict[str, float]:
    headers = {
        "content-type": "application/octet-stream",
        "content-length": str(path.stat().st_size),
    }
    os.sync()  # earlier writes' dirty pages must not throttle these
    discard = _timed(
        server_pid,
        lambda: client.put(
            "/bench/discard", content=_chunks(path), headers=headers
        ).raise_for_status(),
    )
    os.sync()
    upload = _timed(
        server_pid, lambda: client.put("/v1/uploads", content=_chunks(path), headers=headers)
    )
    body = {
        "source": {"upload_id": upload.result.json()["upload_id"]},
        "architecture": architecture,
    }
    start = time.perf_counter()
    check = client.post("/v1/checks", params={"wait": 60}, json=body).json()
    report = client.get(check["links"]["report"]).json()
    checked = time.perf_counter() - start
    assert report["summary"]["verdict"] == "compatible", report["summary"]
    return {
        "discard": discard.wall,
        "ours": upload.wall + checked,
        "upload": upload.wall,
        "check": checked,
        # CPU seconds of the server process (all threads) and this client while the bytes
        # moved, and how busy the whole machine was (kernel writeback included).
        "discard_cpu": discard.cpu,
        "upload_cpu": upload.cpu,
        "discard_machine_busy": discard.machine_busy,
        "upload_machine_busy": upload.machine_busy,
    }


def _wait_ready(client: Any) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:  # the server is starting
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def _warm(client: Any, work: Path, architecture: str) -> None:
    """One small check first, so the worker has built the architecture once (as in service)."""
    import torch
    from safetensors.torch import save_file

    tiny = work / "tiny.safetensors"
    save_file({"warm": torch.zeros(1)}, tiny)
    upload = client.put(
        "/v1/uploads",
        content=tiny.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    ).json()
    body = {"source": {"upload_id": upload["upload_id"]}, "architecture": architecture}
    client.post("/v1/checks", params={"wait": 60}, json=body).raise_for_status()


@dataclass(frozen=True)
class Timed:
    """One request: wall time, CPU of server and client, the machine's busy share, result."""

    wall: float
    cpu: float
    machine_busy: float
    result: Any


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot; idle and iowait count as not busy."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    return total - ticks[3] - ticks[4], total


def _timed(server_pid: int, action: Any) -> Timed:
    cpu = _cpu_of(server_pid) + _client_cpu()
    busy, total = _machine_ticks()
    start = time.perf_counter()
    result = action()
    wall = time.perf_counter() - start
    busy_after, total_after = _machine_ticks()
    share = (busy_after - busy) / max(1, total_after - total)
    return Timed(wall, _cpu_of(server_pid) + _client_cpu() - cpu, share, result)


if __name__ == "__main__":
    kind, target = sys.argv[1], Path(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    {"vision": _make_vision, "llama": _make_llama}[kind](target, *sys.argv[3:])
