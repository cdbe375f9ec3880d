"""Conditional GETs for finished results: a strong ``ETag``, and 304 for ``If-None-Match``.

A report (15-114 KB) and a merged file (gigabytes) never change once a check finished, so a
script or a page that polls them should pay for the bytes once (RFC 9110, 13.1.2).
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response


def strong_etag(*parts: str | bytes) -> str:
    """A quoted strong entity tag from ``parts`` (a digest, so any length goes in).

    Example:
        >>> strong_etag(b'{"summary": ...}')  # doctest: +SKIP
        '"4f2a..."'
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return f'"{digest.hexdigest()[:32]}"'


def is_not_modified(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or ``*``); weak tags compare weakly, as the
    RFC asks for this header."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def not_modified(etag: str, *, vary: str | None = None) -> Response:
    """The 304 answer: no body, the tag again (and ``Vary`` when the 200 had it)."""
    headers = {"ETag": etag, **({"Vary": vary} if vary else {})}
    return Response(status_code=304, headers=headers)
