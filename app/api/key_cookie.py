"""The key cookie of the pages, and the CSRF guard that makes it safe for the API to accept.

A browser cannot add ``Authorization`` to a navigation, so the pages take the API key once
(``POST /ui/key``) and keep it in an HttpOnly, SameSite=Strict cookie: scripts on the page
never read it, and other sites' pages never send it. The API accepts the cookie on safe
methods alone; on unsafe ones (POST, PUT, DELETE, PATCH) only with an ``X-CSRF-Token`` header
equal to the token derived from the key, which the pages embed and send. A custom header
cannot be sent cross-origin without a CORS preflight the service never grants, and the token
ties it to this key, so a forged form or fetch from elsewhere is refused either way.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

KEY_COOKIE = "ckpt_compat_key"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_DOMAIN = b"ckpt-compat csrf v1\0"
_COOKIE_MAX_AGE = 30 * 24 * 3600  # seconds: a month, then the page asks again


def csrf_token(key: str) -> str:
    """The CSRF token of a key cookie: a one-way digest, so the page can show it safely.

    Example:
        >>> len(csrf_token("s3cret"))
        64
    """
    return hashlib.sha256(_CSRF_DOMAIN + key.encode("utf-8")).hexdigest()


def cookie_key(request: Request) -> str | None:
    """The API key the request's cookie carries, or None."""
    return request.cookies.get(KEY_COOKIE) or None


def cookie_key_usable(request: Request, key: str) -> bool:
    """Whether the cookie's key may authenticate this request (the CSRF guard).

    Safe methods need nothing more (SameSite=Strict keeps cross-site navigations without the
    cookie, and their answers are not readable cross-origin); unsafe methods need the token.
    """
    if request.method.upper() in SAFE_METHODS:
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode("utf-8"), csrf_token(key).encode("utf-8"))


def set_key_cookie(response: Response, request: Request, key: str) -> None:
    """Remember the key: HttpOnly (no script reads it), SameSite=Strict, Secure over https."""
    response.set_cookie(
        KEY_COOKIE,
        key,
        max_age=_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_key_cookie(response: Response) -> None:
    """Forget the key."""
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")


def same_origin_form(request: Request) -> bool:
    """Whether a form post comes from this site's own pages (refuses login CSRF).

    Browsers send ``Sec-Fetch-Site``, and ``Origin`` on posts; a client that sends neither
    (a script, curl) is not a browser another site could drive.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site (no scheme, no ``//`` host), else ``default``.

    Example:
        >>> local_path("//evil.example/x"), local_path("/v1/checks/1/report.html")
        ('/', '/v1/checks/1/report.html')
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return default
    return target
