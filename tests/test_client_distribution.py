"""The client distribution (``clients/python``) installs without torch and checks through a
real server; its training plan then applies to a real model in the main environment.

A fresh venv (``python -m venv``) gets ``pip install ./clients/python`` exactly as a pipeline
would (the machine's pip configuration, its local wheels and PyPI), so what the test proves is
what a user gets: httpx, typer and rich, the repository's own ``ckpt_compat_client`` files and
nothing of the server. About 60 s on 2 idle cores (the venv and its install, 45 s; the
server warms up meanwhile), up to twice that on a loaded machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from ckpt_compat_client.training import apply_training_plan, freeze_norm_statistics
from tests.checkpoints import save_checkpoint
from tests.servers import ROOT, free_port, start_cli, stop_process, wait_until_ready

pytestmark = pytest.mark.slow

PACKAGE = ROOT / "ckpt_compat_client"


def _isolated_env() -> dict[str, str]:
    """The environment without anything that would put the repository on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def server_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``ckpt-compat serve`` from the main environment, started first: it warms up its worker
    while the venv is made, which halves the module's time."""
    data_dir = tmp_path_factory.mktemp("server-data")
    port = free_port()
    arguments = ["serve", "--port", str(port), "--workers", "1", "--data-dir", str(data_dir)]
    process = start_cli([*arguments, "--log-level", "warning"], {**os.environ})
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def client_venv(
    tmp_path_factory: pytest.TempPathFactory, server_process: tuple[str, subprocess.Popen[bytes]]
) -> Path:
    """A fresh venv with only the client distribution installed; returns its bin directory."""
    venv = tmp_path_factory.mktemp("client-venv")
    # pip builds a local directory in place; setuptools would pack a module left in an old
    # build/ even after its source was removed.
    shutil.rmtree(ROOT / "clients" / "python" / "build", ignore_errors=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, str(ROOT / "clients/python")],
    ):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, cwd=venv, env=_isolated_env()
        )
        assert done.returncode == 0, done.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def server(server_process: tuple[str, subprocess.Popen[bytes]], client_venv: Path) -> str:
    base, process = server_process
    wait_until_ready(base, process)
    return base


def _in_venv(
    bin_dir: Path, *arguments: str, cwd: Path, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / arguments[0]), *arguments[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=_isolated_env(),
        check=check,
    )


def test_client_distribution_has_no_torch_and_ships_the_repository_files(
    client_venv: Path, tmp_path: Path
) -> None:
    code = (
        "import importlib.util, pathlib, ckpt_compat_client\n"
        "print([m for m in ('torch', 'fastapi', 'sqlalchemy', 'app') "
        "if importlib.util.find_spec(m)])\n"
        "print(pathlib.Path(ckpt_compat_client.__file__).parent)\n"
    )
    done = _in_venv(client_venv, "python", "-c", code, cwd=tmp_path, check=True)
    present, installed = done.stdout.splitlines()
    assert present == "[]"
    no_torch = _in_venv(client_venv, "python", "-c", "import torch", cwd=tmp_path)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    # One copy: the installed modules are the repository's files, byte for byte.
    sources = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert sorted(p.name for p in Path(installed).glob("*.py")) == sources
    for name in sources:
        assert (Path(installed) / name).read_bytes() == (PACKAGE / name).read_bytes(), name


def test_client_distribution_checks_through_a_server_and_its_plan_trains_the_head(
    client_venv: Path, server: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    source = torchvision.models.squeezenet1_1().state_dict()  # 5 MB, 1000 classes
    path = save_checkpoint(source, tmp_path / "squeezenet.pth")
    merged = tmp_path / "merged.safetensors"
    done = _in_venv(
        client_venv,
        "ckpt-compat-client",
        "check",
        str(path),
        "--arch",
        "torchvision:squeezenet1_1",
        "--kwargs",
        '{"num_classes": 10}',
        "--merge",
        str(merged),
        "--json",
        "--server",
        server,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["verdict"] == "compatible_with_changes"
    assert f"upload {path.stat().st_size / 1e6:.1f} MB in" in done.stderr

    local = _in_venv(
        client_venv,
        "ckpt-compat-client",
        "check",
        str(path),
        "--arch",
        "x",
        "--local",
        cwd=tmp_path,
    )
    assert local.returncode == 2
    assert "needs the server package" in local.stderr and "--server URL" in local.stderr

    # The plan from the torch-free client, applied where the model lives.
    model = torchvision.models.squeezenet1_1(num_classes=10)
    model.load_state_dict(load_file(merged))
    groups = apply_training_plan(model, report, weight_decay=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.1.weight", "classifier.1.bias"}
    assert sum(len(g["params"]) for g in groups) == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.1)
    model.train()
    assert freeze_norm_statistics(model, report) == []  # squeezenet has no BatchNorm
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
