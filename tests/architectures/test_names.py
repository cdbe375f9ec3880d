"""Tests of the architecture name parser."""

from __future__ import annotations

import pytest

from app.architectures import SOURCE_PRECEDENCE, QualifiedName, parse_name
from app.errors import ArchitectureNotFoundError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resnet50", (None, "resnet50")),
        ("torchvision:resnet50", ("torchvision", "resnet50")),
        ("timm:vit_base_patch16_224", ("timm", "vit_base_patch16_224")),
        ("plugin:my_net", ("plugin", "my_net")),
        ("  timm : resnet18 ", ("timm", "resnet18")),
    ],
)
def test_parse_name_splits_source_and_name(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_name(text) == expected


def test_parse_name_unknown_source_lists_sources() -> None:
    with pytest.raises(
        ArchitectureNotFoundError, match="torchvision, timm, transformers, plugin"
    ) as info:
        parse_name("keras:resnet50")
    assert info.value.status == 404
    assert info.value.extensions["sources"] == list(SOURCE_PRECEDENCE)


@pytest.mark.parametrize("text", ["", "   ", "timm:"])
def test_parse_name_empty_name_is_not_found(text: str) -> None:
    with pytest.raises(ArchitectureNotFoundError, match="Empty architecture name"):
        parse_name(text)


def test_qualified_name_str_is_source_colon_name() -> None:
    assert str(QualifiedName("timm", "resnet18")) == "timm:resnet18"


def test_source_precedence_order() -> None:
    assert SOURCE_PRECEDENCE == ("torchvision", "timm", "transformers", "plugin")
