"""Fixtures for matching tests: indexes built from real torch modules and state_dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pytest

from app.tensors import TensorIndex, TensorInfo, TensorKind

if TYPE_CHECKING:
    import torch


def _info(key: str, tensor: torch.Tensor, kind: TensorKind) -> TensorInfo:
    return TensorInfo(key, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), kind)


def build_model_index(model: torch.nn.Module) -> TensorIndex:
    """The model side: every state_dict key, kind parameter or buffer."""
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return TensorIndex.from_infos(
        [
            _info(k, v, TensorKind.PARAMETER if k in parameters else TensorKind.BUFFER)
            for k, v in model.state_dict().items()
        ]
    )


def build_checkpoint_index(state: Mapping[str, torch.Tensor]) -> TensorIndex:
    """The checkpoint side: every tensor, kind unknown."""
    return TensorIndex.from_infos([_info(k, v, TensorKind.UNKNOWN) for k, v in state.items()])


@pytest.fixture
def model_index() -> Callable[[torch.nn.Module], TensorIndex]:
    return build_model_index


@pytest.fixture
def checkpoint_index() -> Callable[[Mapping[str, torch.Tensor]], TensorIndex]:
    return build_checkpoint_index
