"""The callback allowlist: patterns, URLs, and the problem a refused host gets."""

from __future__ import annotations

import pytest

from app.callbacks.hosts import HostPattern, parse_host_patterns, require_allowed, url_host
from app.callbacks.signing import check_secret
from app.config import Settings
from app.errors import CallbackNotAllowedError


def test_parse_host_patterns_reads_hosts_ports_wildcards_and_ipv6() -> None:
    assert parse_host_patterns(" Registry.Internal, 127.0.0.1:8080,*.example.com,[::1]:9") == (
        HostPattern("registry.internal", None),
        HostPattern("127.0.0.1", 8080),
        HostPattern("*.example.com", None),
        HostPattern("::1", 9),
    )
    assert parse_host_patterns("") == ()


@pytest.mark.parametrize("bad", ["http://x", "a/b", "x:notaport", "a.*.com", "user@host"])
def test_parse_host_patterns_refuses_what_is_not_a_host(bad: str) -> None:
    with pytest.raises(ValueError, match="not a host or host:port pattern"):
        parse_host_patterns(bad)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.0.0.1:8081/hook", False),  # another port
        ("https://api.example.com/h", True),
        ("https://example.com/h", False),  # the wildcard wants a subdomain
        ("https://evil-example.com/h", False),
        ("http://REGISTRY.internal/h", True),
        ("http://registry.internal.evil.com/h", False),
    ],
)
def test_require_allowed_matches_host_and_port(url: str, allowed: bool) -> None:
    patterns = parse_host_patterns("127.0.0.1:8080,*.example.com,registry.internal")
    if allowed:
        require_allowed(url, patterns)
    else:
        with pytest.raises(CallbackNotAllowedError, match="not in CKPT_COMPAT_CALLBACK_HOSTS"):
            require_allowed(url, patterns)


def test_require_allowed_without_patterns_says_callbacks_are_off() -> None:
    with pytest.raises(CallbackNotAllowedError, match="Callbacks are off"):
        require_allowed("http://127.0.0.1/", ())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://user:pw@127.0.0.1/", "credentials"),
    ],
)
def test_url_host_refuses_urls_it_would_not_post_to(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        url_host(url)


def test_url_host_defaults_the_port_by_scheme() -> None:
    assert url_host("https://Registry.internal/x") == ("registry.internal", 443)
    assert url_host("http://registry.internal/x") == ("registry.internal", 80)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "must be a Standard Webhooks secret"),
        ("whsec_!!!", "not valid base64"),
        ("whsec_c2hvcnQ=", "too short"),
    ],
)
def test_check_secret_refuses_unusable_secrets(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_secret(secret)


def test_settings_with_callback_hosts_need_a_secret() -> None:
    with pytest.raises(ValueError, match="CKPT_COMPAT_WEBHOOK_SECRET"):
        Settings(callback_hosts="127.0.0.1")
    with pytest.raises(ValueError, match="not a host or host:port pattern"):
        Settings(callback_hosts="http://x", webhook_secret="whsec_" + "A" * 32)
