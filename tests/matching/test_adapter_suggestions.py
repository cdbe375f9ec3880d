"""Issue 12: ``suggested_options`` proposes the adapters that load what the options leave, keeps
the options the user gave (so the suggestion pastes as it is), and proposes nothing that an
adapter would refuse. Indexes of real torch and timm modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from app.enums import Verdict
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex
from tests.merge.test_adapters import Conv1DBlock, LinearBlock, _split_vit, _vit

ModelIndex = Callable[[nn.Module], TensorIndex]
CkptIndex = Callable[[Mapping[str, torch.Tensor]], TensorIndex]


def _analyse(
    state: Mapping[str, torch.Tensor],
    target: nn.Module,
    options: MatchOptions,
    model_index: ModelIndex,
    checkpoint_index: CkptIndex,
    kwargs: Mapping[str, object] | None = None,
) -> Analysis:
    arch = ArchitectureIndex("plugin:m", "plugin", dict(kwargs or {}), model_index(target))
    return analyse(CheckpointIndex("safetensors", checkpoint_index(state)), arch, options)


def test_fused_qkv_into_split_attention_suggests_the_qkv_adapter(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    analysis = _analyse(
        _vit().state_dict(), _split_vit(), MatchOptions(), model_index, checkpoint_index
    )
    assert analysis.result.loaded_parameter_fraction < 1.0
    [suggestion] = analysis.suggestions
    assert dict(suggestion.options) == {"adapt": ["qkv"]}
    assert (suggestion.loaded_parameter_fraction, suggestion.verdict) == (1.0, Verdict.COMPATIBLE)
    # The message alone (the CLI's last line, a registry tag) says that pasting options helps.
    assert analysis.message.endswith(
        "suggested_options has options (adapt) that load 100.0% of the parameters "
        "(compatible): pass them as options to use them."
    )


def test_suggestion_keeps_the_given_options_and_architecture_kwargs(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    state = {f"module.{k}": v for k, v in Conv1DBlock().state_dict().items()}
    given = MatchOptions(strip_prefix="module.", rename=((r"^x\.", "y."),))
    analysis = _analyse(
        state, LinearBlock(), given, model_index, checkpoint_index, kwargs={"width": 8}
    )
    [suggestion] = analysis.suggestions
    assert dict(suggestion.options) == {
        "strip_prefix": "module.",
        "rename": [{"pattern": r"^x\.", "replacement": "y."}],
        "adapt": ["transpose"],
        "architecture_kwargs": {"width": 8},
    }
    assert suggestion.loaded_parameter_fraction == 1.0


def test_no_suggestion_when_the_adapter_is_already_asked_for(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    options = MatchOptions(adapt=("transpose",))
    state = Conv1DBlock().state_dict()
    analysis = _analyse(state, LinearBlock(), options, model_index, checkpoint_index)
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert analysis.suggestions == ()
    assert "suggested_options" not in analysis.message


def test_no_suggestion_for_what_the_adapter_refuses(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """timm's adapt_input_conv makes no 3-channel kernel from 4 channels: nothing to suggest."""
    source, target = nn.Conv2d(4, 8, 3), nn.Conv2d(3, 8, 3)
    analysis = _analyse(source.state_dict(), target, MatchOptions(), model_index, checkpoint_index)
    reasons = {e.reason.value for e in analysis.explanations.shape_mismatched.values()}
    assert reasons == {"input_channels"}
    assert analysis.suggestions == ()
