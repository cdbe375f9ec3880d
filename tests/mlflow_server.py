"""A real MLflow tracking server for tests: ``mlflow server`` from PyPI, SQLite backend.

MLflow's server pins its own stack (Flask, SQLAlchemy, alembic, pandas...), so it runs from
a venv of its own, built once per machine under ``$XDG_CACHE_HOME/ckpt-compat/`` (or
``CKPT_COMPAT_MLFLOW_VENV``) by the session fixture, and reused while ``MLFLOW_VERSION``
stays the same. The service under test talks to it with the ``mlflow-skinny`` client of the
main venv. MLflow delivers webhooks to loopback over http only when
``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`` and ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES`` say so
(``mlflow/environment_variables.py``), which the server is started with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port, wait_for_port

MLFLOW_VERSION = "3.17.2"
"""The server's version, pinned so the cached venv is rebuilt only when this changes."""


def venv_dir() -> Path:
    """Where the server's venv lives (kept between runs: building it takes a minute)."""
    given = os.environ.get("CKPT_COMPAT_MLFLOW_VENV")
    if given:
        return Path(given)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ckpt-compat" / f"mlflow-server-{MLFLOW_VERSION}"


def ensure_venv() -> tuple[Path, float]:
    """The ``mlflow`` executable of the server's venv, built if missing, and the seconds the
    build took (0 when it was there). A lock file keeps two sessions from building at once."""
    root = venv_dir()
    mlflow = root / "bin" / "mlflow"
    stamp = root / ".installed"
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{root.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and mlflow.exists():
            return mlflow, 0.0
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        subprocess.run(
            [
                str(root / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                f"mlflow=={MLFLOW_VERSION}",
            ],
            check=True,
            timeout=1200,
        )
        stamp.write_text(MLFLOW_VERSION)
        return mlflow, time.monotonic() - started


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``url`` is its tracking URI."""

    url: str
    directory: Path
    log: Path


@contextlib.contextmanager
def running_mlflow(directory: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, artifacts proxied (mlflow-artifacts:/),
    its webhooks allowed to loopback over http; stopped after the ``with``."""
    mlflow, _ = ensure_venv()
    port = free_port()
    log = directory / "mlflow.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(directory)),
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        # Deliveries are listed per event and cached; a webhook made by a test is seen at once.
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{directory / 'mlflow.db'}",
                "--artifacts-destination",
                str(directory / "artifacts"),
                "--workers",
                "1",
            ],
            env=env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout=120)
        _wait_healthy(url, process, log)
        yield MlflowServer(url, directory, log)
    finally:
        from tests.servers import stop_process

        # Its webhook threads may still be retrying deliveries to a stopped service; the
        # server holds nothing worth a graceful stop, so it is killed after 10 s.
        stop_process(process, timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        if process.poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")


def small_state_dict(seed: int = 0) -> dict[str, Any]:
    """A random-init torchvision SqueezeNet 1.1 (1.2 M parameters, 5 MB): a real model."""
    import torch
    from torchvision.models import squeezenet1_1

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in squeezenet1_1(weights=None).state_dict().items()}


def log_checkpoint(
    tracking_uri: str,
    files: dict[str, dict[str, Any]],
    *,
    artifact_path: str = "checkpoint",
    experiment: str = "ckpt-compat-tests",
) -> str:
    """A new run holding ``files`` (name: state_dict), each saved with safetensors'
    ``save_file`` and logged with ``log_artifact`` under ``artifact_path``; returns its id."""
    import tempfile

    from mlflow.tracking import MlflowClient
    from safetensors.torch import save_file

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id)
    with tempfile.TemporaryDirectory() as work:
        for name, state in files.items():
            path = Path(work) / name
            save_file(state, str(path))
            client.log_artifact(run.info.run_id, str(path), artifact_path)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)
