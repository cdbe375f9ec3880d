"""The pages' key cookie: its CSRF token, same-origin form posts, local redirect targets."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from app.api.key_cookie import (
    CSRF_HEADER,
    KEY_COOKIE,
    cookie_key_usable,
    csrf_token,
    local_path,
    same_origin_form,
)


def _request(method: str = "GET", **headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": raw,
        "scheme": "http",
        "server": ("testserver", 80),
    }
    return Request(scope)


def test_csrf_token_is_per_key_and_does_not_show_the_key() -> None:
    assert csrf_token("a") != csrf_token("b")
    assert "s3cret" not in csrf_token("s3cret")


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_cookie_key_usable_on_safe_methods_alone(method: str) -> None:
    assert cookie_key_usable(_request(method), "k")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cookie_key_usable_on_unsafe_methods_only_with_the_token(method: str) -> None:
    assert not cookie_key_usable(_request(method), "k")
    assert not cookie_key_usable(_request(method, **{CSRF_HEADER: csrf_token("other")}), "k")
    assert cookie_key_usable(_request(method, **{CSRF_HEADER: csrf_token("k")}), "k")


def test_same_origin_form() -> None:
    assert same_origin_form(_request("POST"))  # a script: no browser to drive
    assert same_origin_form(
        _request("POST", origin="http://testserver", sec_fetch_site="same-origin")
    )
    assert not same_origin_form(_request("POST", origin="http://evil.example"))
    assert not same_origin_form(_request("POST", sec_fetch_site="cross-site"))
    assert not same_origin_form(_request("POST", sec_fetch_site="same-site"))
    assert not same_origin_form(_request("POST", origin="null"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v1/checks/1/report.html?x=1", "/v1/checks/1/report.html?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_local_path_keeps_only_paths_on_this_site(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_cookie_name_is_stable() -> None:
    assert KEY_COOKIE == "ckpt_compat_key"  # documented in the README
