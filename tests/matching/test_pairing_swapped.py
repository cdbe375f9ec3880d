"""Issue 12, "never a wrong mapping": same-shaped blocks stored in swapped order are not mapped
crosswise, neither automatically nor in ``suggested_options``; the suggestion, applied, gives
a model that computes what the source computes."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from app.enums import Verdict
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex

ModelIndex = Callable[[nn.Module], TensorIndex]
CkptIndex = Callable[[Mapping[str, torch.Tensor]], TensorIndex]


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(torch.tanh(self.lin(x)))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.fc(x)))


class _Source(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(_Layer() for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


class _Target(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_Block() for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)  # type: ignore[no-any-return]


def _swapped(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer 1's tensors stored before layer 0's: file order says one thing, names another."""
    first = [k for k in state if k.startswith("layers.1.")]
    return {**{k: state[k] for k in first}, **{k: v for k, v in state.items() if k not in first}}


def _crosswise(mapping: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(c, m) for c, m in mapping.items() if c.split(".")[1] != m.split(".")[1]]


def test_swapped_same_shaped_blocks_are_never_mapped_crosswise(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    torch.manual_seed(0)
    source = _Source().eval()
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    state = _swapped(source.state_dict())
    arch = ArchitectureIndex("plugin:m", "plugin", {}, model_index(_Target()))
    ckpt = CheckpointIndex("safetensors", checkpoint_index(state))
    analysis = analyse(ckpt, arch, MatchOptions())
    assert not _crosswise(analysis.key_map)
    # order and names disagree, so the pairing is only suggested: the path this test guards
    assert analysis.verdict is not Verdict.COMPATIBLE
    assert len(analysis.suggestions) == 1
    mapping = analysis.suggestions[0].options["key_map"]
    assert isinstance(mapping, dict)
    assert len(mapping) == len(state) and not _crosswise(mapping), mapping
    applied = analyse(ckpt, arch, MatchOptions(key_map=tuple(mapping.items())))
    _forward_agrees(source, state, applied)


def _forward_agrees(source: nn.Module, state: Mapping[str, torch.Tensor], done: Analysis) -> None:
    assert done.result.loaded_parameter_fraction == 1.0
    target = _Target().eval()
    target.load_state_dict({m: state[c] for m, c in done.key_map.items()}, strict=True)
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
