"""Helpers shared by the reader tests: a tiny state_dict and the saver type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

Saver = Callable[[Any, str], Path]


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """A small state_dict with several dtypes."""
    torch.manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "conv.bias": torch.randn(4),
        "fc.weight": torch.randn(2, 4).to(torch.float16),
        "fc.bias": torch.randn(2).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(7),
    }
