"""Tests of app.architectures.heads: the head modules recorded in the architecture index."""

from __future__ import annotations

import doctest

import pytest

import app.architectures.building as building_module
import app.architectures.heads as heads_module
from app.architectures import describe

BERT = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def test_heads_docstring_examples_run() -> None:
    assert doctest.testmod(heads_module).failed == 0
    assert doctest.testmod(building_module).failed == 0


@pytest.mark.parametrize(
    ("name", "kwargs", "heads"),
    [
        ("torchvision:resnet18", {}, ("fc",)),
        ("torchvision:efficientnet_b0", {}, ("classifier",)),
        ("torchvision:fasterrcnn_mobilenet_v3_large_fpn", {}, ("rpn", "roi_heads")),
        ("torchvision:lraspp_mobilenet_v3_large", {}, ("classifier",)),
        ("timm:convnext_atto", {}, ("head.fc",)),
        ("timm:convnext_atto", {"num_classes": 0}, ()),
        ("transformers:bert", {"config": BERT}, ()),
        (
            "transformers:bert",
            {"config": BERT, "auto_class": "AutoModelForSequenceClassification"},
            ("classifier",),
        ),
    ],
)
def test_describe_records_the_head_modules(
    name: str, kwargs: dict[str, object], heads: tuple[str, ...]
) -> None:
    assert describe(name, kwargs).head_modules == heads
