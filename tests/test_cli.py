"""The command line: ``ckpt-compat index`` builds the catalogue index; the server's commands
keep their flags; ``--help`` loads no torch.

Run as subprocesses: ``index`` caps its own address space as a worker does, which must not
happen to the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.catalog_index.store import load_index
from app.cli import parse_command


def test_cli_index_builds_the_named_architectures_into_the_cache(tmp_path: Path) -> None:
    command = ["index", "--cache-dir", str(tmp_path), "torchvision:resnet18"]
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "1/1 architectures" in done.stdout and "'architectures': 1" in done.stdout
    index = load_index(tmp_path)
    assert index is not None and [s.name for s in index.signatures] == ["torchvision:resnet18"]


def test_cli_help_lists_every_command_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from app.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in ('torch', 'fastapi', 'sqlalchemy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    for command in ("serve", "worker", "index", "check", "architectures", "report"):
        assert f" {command} " in done.stdout, command
    assert done.stdout.splitlines()[-1] == "[]"


def test_cli_serve_worker_and_index_keep_their_flags() -> None:
    name, params = parse_command(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "8001",
            "--workers",
            "3",
            "--data-dir",
            "/data",
            "--log-level",
            "warning",
            "--api-processes",
            "2",
        ]
    )
    assert name == "serve"
    assert params == {
        "host": "0.0.0.0",
        "port": 8001,
        "workers": 3,
        "data_dir": Path("/data"),
        "log_level": "warning",
        "api_processes": 2,
    }
    assert parse_command(["worker", "--concurrency", "2", "--loglevel", "debug"]) == (
        "worker",
        {"concurrency": 2, "loglevel": "debug"},
    )
    name, params = parse_command(["index", "--cache-dir", "/c", "timm:a", "timm:b"])
    assert params == {"cache_dir": Path("/c"), "names": ["timm:a", "timm:b"]}


def test_cli_refuses_an_unknown_flag_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--prot", "8000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--prot" in done.stderr


def test_cli_worker_without_the_celery_queue_exits_2_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "CKPT_COMPAT_QUEUE": "local", "CKPT_COMPAT_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("ckpt-compat: the worker serves CKPT_COMPAT_QUEUE=celery")
