"""Optional API keys: ``CKPT_COMPAT_API_KEYS`` (comma-separated) or ``CKPT_COMPAT_API_KEYS_FILE``.

With no key configured the API is open. With keys, every ``/v1`` route needs one, sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; the health probes stay open. Keys
are compared as SHA-256 digests with ``hmac.compare_digest``, against every key, so the
time taken says nothing about how much of a key was right, nor which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.problems import problem_response
from app.config import Settings
from app.errors import UnauthorizedError

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


def load_api_keys(settings: Settings) -> frozenset[bytes]:
    """The SHA-256 digests of the configured keys (empty: the API is open).

    Raises:
        OSError: ``api_keys_file`` is set but cannot be read (the service does not start).
    """
    keys = [k.strip() for k in settings.api_keys.split(",")]
    if settings.api_keys_file is not None:
        lines = settings.api_keys_file.read_text(encoding="utf-8").splitlines()
        keys += [line.strip() for line in lines if not line.strip().startswith("#")]
    return frozenset(_digest(k) for k in keys if k)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _is_valid(presented: str, digests: frozenset[bytes]) -> bool:
    candidate = _digest(presented)
    found = False
    for digest in digests:  # no early exit: every key is compared
        found |= hmac.compare_digest(candidate, digest)
    return found


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    """Route dependency: pass when keys are off or a valid key was sent.

    Raises:
        UnauthorizedError: Keys are on and none, or a wrong one, was sent (401).
    """
    digests: frozenset[bytes] = getattr(request.app.state, "api_key_digests", frozenset())
    if not digests:
        return
    presented = header or (bearer.credentials if bearer is not None else None)
    if not presented:
        raise UnauthorizedError(
            "This server requires an API key: send 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>' (in Swagger UI, use the Authorize button)."
        )
    if not _is_valid(presented, digests):
        raise UnauthorizedError("The API key is not valid.")


ApiKeyDep = Depends(require_api_key)


async def _unauthorized(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnauthorizedError)
    return problem_response(exc, headers=_CHALLENGE)


def install_api_keys(app: FastAPI) -> None:
    """Render 401 problems with a challenge header (keys are loaded in the lifespan)."""
    app.add_exception_handler(UnauthorizedError, _unauthorized)
