"""Jinja2 rendering of the pages, with their CSS and scripts inlined under a nonce.

Inlining makes every page one self-contained file: it works offline, and a saved report page
still works. The Content-Security-Policy allows only the scripts and styles carrying this
response's nonce, so even a key that slipped past escaping could not run a script.
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, FileSystemLoader
from markupsafe import Markup
from starlette.responses import HTMLResponse

from app.web.view import human_bytes, human_count

_HERE = Path(__file__).parent
_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@cache
def environment() -> Environment:
    """Templates autoescaped everywhere; a field an older report lacks renders empty."""
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=ChainableUndefined,  # reports stored before a field existed lack it
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = human_count
    env.filters["bytes"] = human_bytes
    env.filters["percent"] = lambda f: "-" if f is None else f"{100 * f:.1f} %"
    return env


@cache
def asset(name: str) -> Markup:
    """A CSS or script file of the package, as trusted markup (it is ours, never a caller's)."""
    return Markup((_HERE / "assets" / name).read_text(encoding="utf-8"))  # noqa: S704


def render_page(
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The page ``template`` rendered with ``context``, and its security headers."""
    nonce = secrets.token_urlsafe(16)
    html = environment().get_template(template).render(nonce=nonce, asset=asset, **context)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers["Content-Security-Policy"] = _CSP.format(nonce=nonce)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response
