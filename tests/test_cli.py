"""The command line: ``ckpt-compat index`` builds the catalogue index in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog_index.store import load_index
from app.cli import main


def test_cli_index_builds_the_named_architectures_into_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["index", "--cache-dir", str(tmp_path), "torchvision:resnet18"])
    out = capsys.readouterr().out
    assert "1/1 architectures" in out and "'architectures': 1" in out
    index = load_index(tmp_path)
    assert index is not None and [s.name for s in index.signatures] == ["torchvision:resnet18"]
