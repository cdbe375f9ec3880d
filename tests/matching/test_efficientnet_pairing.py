"""Issue 12, a named case: timm's EfficientNet into torchvision's, paired by structure.

timm has 7 stages of blocks where torchvision has 9 ``features`` (stem and head included), so
stage 0 is not ``features.0``: ranks compare only within stacks of one size. Applied
automatically, the mapping gives a model that computes exactly what timm's computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import timm
import torch
import torchvision
from torch import nn

from app.architectures import describe
from app.enums import TransformKind, Verdict
from app.matching.analysis import MatchOptions, analyse
from app.tensors import CheckpointIndex, TensorIndex

CkptIndex = Callable[[Mapping[str, torch.Tensor]], TensorIndex]


def _trained_like(model: nn.Module) -> nn.Module:
    """Norm weights and statistics away from their init, so that two swapped norms differ."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif "bn" in name and tensor.is_floating_point():
                tensor.normal_(0.5, 0.2)
    return model.eval()


def test_timm_efficientnet_into_torchvision_pairs_automatically_and_computes_the_same(
    checkpoint_index: CkptIndex,
) -> None:
    source = _trained_like(timm.create_model("efficientnet_b0"))
    state = source.state_dict()
    architecture = describe("torchvision:efficientnet_b0", {})
    ckpt = CheckpointIndex("safetensors", checkpoint_index(state))
    analysis = analyse(ckpt, architecture, MatchOptions())
    assert analysis.verdict is Verdict.COMPATIBLE
    assert analysis.alignment.steps[-1].transform.kind is TransformKind.KEY_MAP
    assert analysis.key_map["features.0.1.weight"] == "bn1.weight"  # the stem's norm
    target = torchvision.models.efficientnet_b0().eval()
    target.load_state_dict({m: state[c] for m, c in analysis.key_map.items()}, strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(target.features(x), source.forward_features(x))
        torch.testing.assert_close(target(x), source(x))
