"""If-None-Match parsing for the results' strong ETags."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from app.api.conditional import is_not_modified, strong_etag


def _request(if_none_match: str | None) -> Request:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match.encode())]
    return Request({"type": "http", "method": "GET", "headers": headers})


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, False), ('"other"', False), ("*", True), ('"other", W/{tag}', True), ("{tag}", True)],
)
def test_is_not_modified_if_none_match(header: str | None, expected: bool) -> None:
    tag = strong_etag(b"report")
    value = None if header is None else header.replace("{tag}", tag)
    assert is_not_modified(_request(value), tag) is expected


def test_strong_etag_differs_by_part_boundaries() -> None:
    assert strong_etag("ab", "c") != strong_etag("a", "bc")
    assert strong_etag(b"x").startswith('"') and len(strong_etag(b"x")) == 34
