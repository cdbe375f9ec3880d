"""Tests of the plugin architecture source, through a fake installed distribution."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.architectures import clear_caches, describe, list_architectures, resolve
from app.errors import ArchitectureBuildError, ArchitectureNotFoundError
from app.tensors import TensorKind

PLUGIN_MODULE = """\
import torch


def build(**kwargs):
    return torch.nn.Linear(4, kwargs.get("out", 2))


def broken(**kwargs):
    return "not a module"
"""

ENTRY_POINTS = """\
[ckpt_compat.architectures]
my_net = my_plugin:build
broken_net = my_plugin:broken
missing_net = my_plugin_missing:build
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install a fake distribution ``my-plugin`` that registers three architectures."""
    (tmp_path / "my_plugin.py").write_text(PLUGIN_MODULE)
    dist_info = tmp_path / "my_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)
    clear_caches()
    yield
    clear_caches()


@pytest.mark.usefixtures("plugin")
def test_plugin_describe_passes_kwargs() -> None:
    arch = describe("plugin:my_net", {"out": 3})
    assert arch.name == "plugin:my_net"
    assert arch.index.tensors["weight"].shape == (3, 4)
    assert arch.index.tensors["bias"].kind is TensorKind.PARAMETER


@pytest.mark.usefixtures("plugin")
def test_plugin_bare_name_resolves_to_plugin() -> None:
    assert str(resolve("my_net")) == "plugin:my_net"
    assert "my_net" in {q.name for q in list_architectures(source="plugin")}


@pytest.mark.usefixtures("plugin")
def test_plugin_returning_no_module_is_a_build_error() -> None:
    with pytest.raises(ArchitectureBuildError, match=r"returned str, not a torch\.nn\.Module"):
        describe("plugin:broken_net", {})


@pytest.mark.usefixtures("plugin")
def test_plugin_that_does_not_load_is_a_build_error() -> None:
    with pytest.raises(ArchitectureBuildError, match="could not be loaded: ModuleNotFoundError"):
        describe("plugin:missing_net", {})


@pytest.mark.usefixtures("fresh_registry")
def test_plugin_unknown_name_is_not_found() -> None:
    with pytest.raises(ArchitectureNotFoundError, match="Unknown architecture 'plugin:my_net'"):
        resolve("plugin:my_net")
