"""Checkpoints of models quantized with PyTorch's eager-mode quantization (torch.ao).

torchvision's quantized models (``torchvision.models.quantization.resnet18(quantize=True)``:
fuse, prepare, calibrate, convert) save ``qint8`` weights with each module's ``scale`` and
``zero_point``, convolutions fused with their BatchNorm, and each Linear's weight packed in
``_packed_params``. Such files were refused as damaged ("unpickling failed", since quantized
tensors cannot be made on the meta device) and, once read, called "cast qint8 -> float32".
They are quantized: not loaded into a float model, and loaded as they are into the quantized
architecture they came from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from app.architectures.registry import describe
from app.matching.analysis import MatchOptions, analyse
from app.readers import read_checkpoint
from app.schemas import Reason, Verdict


@pytest.fixture(scope="module")
def quantized_state() -> dict[str, object]:
    """torchvision's own quantize path (``quantize_model``: fbgemm, calibrated on its dummy
    input, converted), random init."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the quantized tensor factories
        model = torchvision.models.quantization.resnet18(weights=None, quantize=True)
    return dict(model.state_dict())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_ao_quantized_file_into_the_float_model_is_quantized_not_corrupt(
    tmp_path: Path, quantized_state: dict[str, object], zip_format: bool
) -> None:
    path = tmp_path / "quantized_resnet18.pth"
    torch.save(quantized_state, path, _use_new_zipfile_serialization=zip_format)
    checkpoint = read_checkpoint(path)
    assert checkpoint.index.tensors["conv1.weight"].dtype == "qint8"
    analysis = analyse(checkpoint, describe("torchvision:resnet18", {}), MatchOptions())
    assert analysis.verdict is Verdict.INCOMPATIBLE
    assert "torch.ao.quantization" in analysis.message
    reasons = {e.reason for e in analysis.explanations.all()}
    assert Reason.QUANTIZED in reasons
    assert Reason.DTYPE_CAST not in reasons  # qint8 is never "cast" into float
    missing = analysis.explanations.missing
    assert missing["conv1.weight"].reason is Reason.QUANTIZED
    assert missing["fc.weight"].reason is Reason.QUANTIZED  # packed in fc._packed_params
    assert not analysis.result.matched or all(
        not k.endswith(".weight") or "bn" in k or "downsample.1" in k
        for k in analysis.result.matched
    )


def test_torch_ao_quantized_file_into_its_quantized_architecture_loads(
    tmp_path: Path, quantized_state: dict[str, object]
) -> None:
    path = tmp_path / "quantized_resnet18.pth"
    torch.save(quantized_state, path)
    architecture = describe("torchvision:quantized_resnet18", {"quantize": True})
    analysis = analyse(read_checkpoint(path), architecture, MatchOptions())
    assert analysis.verdict is Verdict.COMPATIBLE, analysis.message
    assert Reason.QUANTIZED not in {e.reason for e in analysis.explanations.all()}
