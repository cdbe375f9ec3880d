"""The command line: ``ckpt-compat index`` builds the catalogue index.

Run as a subprocess: the command caps its own address space as a worker does, which must not
happen to the test process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.catalog_index.store import load_index


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
