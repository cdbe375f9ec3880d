"""Checkpoints with hostile key names, shared by the page tests."""

from __future__ import annotations

from pathlib import Path

import pytest

HOSTILE_KEY = '</script><script>alert("key")</script><img src=x onerror=alert(1)>.weight'
HOSTILE_FILENAME = '<img src=x onerror=alert("file")>.pth'


@pytest.fixture(scope="module")
def hostile_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 with a 10-class head in mind, plus one key built to break out of markup."""
    import torch

    from tests.checkpoints import resnet18_state_dict, save_checkpoint

    state = resnet18_state_dict()
    state[HOSTILE_KEY] = torch.zeros(3)
    return save_checkpoint({"state_dict": state}, tmp_path_factory.mktemp("ckpt") / "r18.pth")
