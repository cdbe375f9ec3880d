"""Optional API keys (``app.api.keys``): every ``/v1`` route learns who calls.

With no key configured the API is open and every caller is ``OPEN_ACCESS``. With keys, every
``/v1`` route needs one, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, or
the pages' key cookie under its CSRF guard (``app.api.key_cookie``), and the key's principal
owns what it creates; the health probes stay open.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.key_cookie import CSRF_HEADER, cookie_key, cookie_key_usable
from app.api.keys import OPEN_KEYRING, Keyring
from app.api.problems import problem_response
from app.errors import UnauthorizedError
from app.principals import OPEN_ACCESS, Principal

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="An API key as a bearer token: `Authorization: Bearer <key>`.",
)
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="An API key in the `X-API-Key` header.",
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ckpt-compat"'}


async def require_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """Route dependency: the caller (``OPEN_ACCESS`` when keys are off).

    Raises:
        UnauthorizedError: Keys are on and none, or a wrong one, was sent (401).
    """
    keyring: Keyring = getattr(request.app.state, "keyring", OPEN_KEYRING)
    if not keyring.enabled:
        return OPEN_ACCESS
    presented = header or (bearer.credentials if bearer is not None else None)
    if not presented:
        presented = _cookie_credential(request)
    if not presented:
        raise UnauthorizedError(
            "This server requires an API key: send 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>' (in Swagger UI, use the Authorize button)."
        )
    principal = keyring.identify(presented)
    if principal is None:
        raise UnauthorizedError("The API key is not valid.")
    return principal


def _cookie_credential(request: Request) -> str | None:
    """The key of the pages' cookie, where its CSRF guard lets it count.

    Raises:
        UnauthorizedError: The cookie came on an unsafe method without the CSRF token.
    """
    key = cookie_key(request)
    if key is None:
        return None
    if not cookie_key_usable(request, key):
        raise UnauthorizedError(
            "The pages' key cookie counts on POST, PUT, PATCH and DELETE only with the "
            f"{CSRF_HEADER} header the pages send; scripts send 'Authorization: Bearer <key>'."
        )
    return key


def identify(request: Request) -> Principal | None:
    """The caller of a page: ``OPEN_ACCESS`` with keys off, None when it must sign in.

    A page takes the same credentials as the API (a header, or the key cookie), so a script
    with a key can fetch the report page too.
    """
    keyring: Keyring = getattr(request.app.state, "keyring", OPEN_KEYRING)
    if not keyring.enabled:
        return OPEN_ACCESS
    header = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    presented = header or bearer or cookie_key(request)
    return keyring.identify(presented) if presented else None


ApiKeyDep = Depends(require_principal)
PrincipalDep = Annotated[Principal, ApiKeyDep]
"""The caller; FastAPI runs the dependency once per request, shared with the router's."""


async def _unauthorized(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnauthorizedError)
    return problem_response(exc, headers=_CHALLENGE)


def install_api_keys(app: FastAPI) -> None:
    """Render 401 problems with a challenge header (keys are loaded in the lifespan)."""
    app.add_exception_handler(UnauthorizedError, _unauthorized)
