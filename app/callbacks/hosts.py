"""Where callbacks may go: ``CKPT_COMPAT_CALLBACK_HOSTS``, an allowlist of host[:port] patterns.

A callback URL is chosen by the caller, so without an allowlist the service would POST to any
address it can reach (its own database, a cloud metadata endpoint): a request forgery. The
allowlist is checked at submission (a 422) and again before every connection, since the
setting may have changed between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import CallbackNotAllowedError

MAX_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HostPattern:
    """``host`` (lower case; ``*.`` prefix: any subdomain) and an optional ``port``."""

    host: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


def parse_host_patterns(text: str) -> tuple[HostPattern, ...]:
    """The patterns of a comma-separated setting.

    Example:
        >>> parse_host_patterns("127.0.0.1:8080, *.example.com")
        (HostPattern(host='127.0.0.1', port=8080), HostPattern(host='*.example.com', port=None))

    Raises:
        ValueError: A pattern is not ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.
    """
    patterns = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        try:
            parts = urlsplit(f"//{raw}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or parts.path or parts.username or "*" in host.removeprefix("*."):
            raise ValueError(
                f"CKPT_COMPAT_CALLBACK_HOSTS: {raw!r} is not a host or host:port pattern "
                "(e.g. registry.internal, 10.0.0.5:8443, *.example.com)."
            )
        patterns.append(HostPattern(host.lower(), port))
    return tuple(patterns)


def url_host(url: str) -> tuple[str, int]:
    """The lower-case host and port (the scheme's default when absent) a URL connects to.

    Raises:
        ValueError: Not an absolute http(s) URL with a host, or it carries credentials.
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError("callback_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("callback_url has no host")
    if parts.username or parts.password:
        raise ValueError("callback_url must not carry credentials (user:password@)")
    return parts.hostname.lower(), parts.port or _DEFAULT_PORTS[parts.scheme]


def require_allowed(url: str, patterns: tuple[HostPattern, ...]) -> None:
    """Refuse a callback URL whose host is not on the allowlist.

    Raises:
        CallbackNotAllowedError: Callbacks are off, or the host matches no pattern.
    """
    if not patterns:
        raise CallbackNotAllowedError(
            "Callbacks are off on this service: set CKPT_COMPAT_CALLBACK_HOSTS (and "
            "CKPT_COMPAT_WEBHOOK_SECRET), or poll GET /v1/checks/{id}?wait=60."
        )
    try:
        host, port = url_host(url)
    except ValueError as exc:
        raise CallbackNotAllowedError(f"{exc}.") from None
    if not any(p.matches(host, port) for p in patterns):
        raise CallbackNotAllowedError(
            f"The callback host {host}:{port} is not in CKPT_COMPAT_CALLBACK_HOSTS; ask the "
            "operator to allow it.",
            host=f"{host}:{port}",
        )
