"""Fixtures for the architecture registry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.architectures import clear_caches


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Start and end a test with empty registry caches."""
    clear_caches()
    yield
    clear_caches()
