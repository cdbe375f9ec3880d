"""Tiny real checkpoints built in tmp_path for the reader tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from .helpers import Saver


@pytest.fixture
def save_zip(tmp_path: Path) -> Saver:
    """Save an object with torch.save (zip format) under the given file name."""

    def save(obj: Any, name: str) -> Path:
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return save


@pytest.fixture
def save_legacy(tmp_path: Path) -> Saver:
    """Save an object with the legacy (non-zip) torch.save format."""

    def save(obj: Any, name: str) -> Path:
        path = tmp_path / name
        torch.save(obj, path, _use_new_zipfile_serialization=False)
        return path

    return save


@pytest.fixture
def save_safetensors(tmp_path: Path) -> Saver:
    """Save a flat dict of tensors with safetensors."""

    def save(obj: Any, name: str) -> Path:
        path = tmp_path / name
        save_file(obj, str(path), metadata={"format": "pt"})
        return path

    return save


@pytest.fixture(params=["zip", "legacy", "safetensors"])
def save_any(request: pytest.FixtureRequest) -> Saver:
    """Each format in turn."""
    fixture = {"zip": "save_zip", "legacy": "save_legacy", "safetensors": "save_safetensors"}
    saver: Saver = request.getfixturevalue(fixture[request.param])
    return saver


@pytest.fixture(params=["zip", "legacy"])
def save_torch(request: pytest.FixtureRequest) -> Saver:
    """Each torch.save format in turn."""
    saver: Saver = request.getfixturevalue(f"save_{request.param}")
    return saver
