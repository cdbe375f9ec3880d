"""Text fields of a multipart check, checked as each arrives."""

from __future__ import annotations

import asyncio

import pytest

from app.api.early_checks import EarlyChecks
from app.api.submissions import parse_options
from app.errors import ArchitectureArgumentsError, ArchitectureNotFoundError, InvalidOptionsError
from app.names import QualifiedName


async def _resolve(text: str) -> QualifiedName:
    if text != "resnet18":
        raise ArchitectureNotFoundError(f"No architecture named {text!r}.")
    return QualifiedName("torchvision", "resnet18")


def _run(*fields: tuple[str, str]) -> None:
    checks = EarlyChecks(resolve=_resolve, parse_options=parse_options)

    async def feed() -> None:
        for name, value in fields:
            await checks.on_field(name, value)

    asyncio.run(feed())


def test_early_checks_unknown_architecture() -> None:
    with pytest.raises(ArchitectureNotFoundError, match="No architecture named 'resnet_x'"):
        _run(("architecture", "resnet_x"))


def test_early_checks_invalid_options() -> None:
    with pytest.raises(InvalidOptionsError, match="options is not valid JSON"):
        _run(("options", "{"))


@pytest.mark.parametrize("order", [("architecture", "options"), ("options", "architecture")])
def test_early_checks_weights_kwargs_in_either_order(order: tuple[str, str]) -> None:
    values = {"architecture": "resnet18", "options": '{"architecture_kwargs": {"pretrained": 1}}'}
    with pytest.raises(ArchitectureArgumentsError, match="Argument pretrained=1 is refused"):
        _run(*((name, values[name]) for name in order))


def test_early_checks_accepts_valid_fields() -> None:
    _run(
        ("architecture", "resnet18"), ("options", '{"architecture_kwargs": {"pretrained": false}}')
    )
